"""How much each style layer counts in a run's objective: its weighted loss and the norm of
its gradient on the image, as shares of the style term's, at the noise start and at given
images (docs/REPRODUCTION.md: why Fig. 3's rows 4 and 5 look alike).

    python scripts/layer_shares.py loss_scale=reference style=composition_vii size=256
    python scripts/layer_shares.py loss_scale=paper size=256 --images RUN_DIR/result.png

Arguments other than --images are config overrides, as for scripts/run.py.
"""

import argparse
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from loss_table import at_run_size  # scripts/, beside this one

from nst_tf.compose import validate
from nst_tf.config import CONF_DIR, LossScale
from nst_tf.errors import UserError, fail
from nst_tf.hydra_setup import register_configs
from nst_tf.images import read_rgb, to_array


def shares(overrides: list[str], images: list[Path]) -> list[tuple[str, dict[str, tuple]]]:
    """(image name, {layer: (weighted loss share, gradient norm share)}) per image."""
    # First, so TensorFlow's start-up noise is filtered; hence not in isort's order.
    import nst_tf._tensorflow  # noqa: F401, I001
    import tensorflow as tf
    from nst_tf.losses import StyleLoss, Targets
    from nst_tf.objective import loss_weights
    from nst_tf.pictures import initial_image
    from nst_tf.session import SESSION

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        settings = validate(compose("config", overrides=overrides))
    settings, vgg, _, stage = at_run_size(settings)
    extractor = SESSION.extractor(settings, vgg)
    weights = loss_weights(settings).layers["style"]
    terms = {}
    for layer in settings.style_layers:
        term = StyleLoss([layer], settings.loss_scale == LossScale.reference)
        term.build(extractor, stage.content.shape[:2], 1)
        term.start(0, Targets(stage.content, [(stage.styles[0], 1.0)]), {layer: weights[layer]})
        terms[layer] = term
    noise = initial_image("noise", stage.content, stage.content, settings.seed,
                          settings.model.backbone)
    found = [("noise start", noise), *((p.name, to_array(read_rgb(p))) for p in images)]
    out = []
    for name, pixels in found:
        image = tf.constant(np.asarray(pixels, np.float32)[None])
        losses, norms = {}, {}
        for layer, term in terms.items():
            with tf.GradientTape() as tape:
                tape.watch(image)
                value = term.value(extractor(image), image)[0]
            losses[layer] = float(value)
            norms[layer] = float(tf.norm(tape.gradient(value, image)))
        total_loss, total_norm = sum(losses.values()), sum(norms.values())
        out.append((name, {layer: (losses[layer] / total_loss, norms[layer] / total_norm)
                           for layer in terms}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/layer_shares.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. size=256")
    parser.add_argument("--images", nargs="*", type=Path, default=[],
                        help="images of the run's size to measure at, besides the noise start")
    args = parser.parse_args()
    try:
        table = shares(args.overrides, args.images)
    except UserError as error:
        fail(str(error))
    layers = list(table[0][1])
    print("| image | " + " | ".join(layers) + " |")
    print("|---|" + "---|" * len(layers))
    for name, row in table:
        cells = [f"{loss:.3g} / {grad:.3g}" for loss, grad in row.values()]
        print(f"| {name} (loss / gradient share) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
