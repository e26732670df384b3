"""How far each finished job of a sweep got, as numbers that read across panels
(docs/REPRODUCTION.md). Prints one row per job, a Markdown table on stdout (JSON with --json):

- content: the unweighted content loss relative to that of the white noise its seed gives
  (whatever the run started from: 1 = as far from the photo as noise, 0 = the photo);
- style: the unweighted style loss relative to the photo's own (the content image scored
  against the job's style target: 1 = as little style as the photo, 0 = the style's Grams);
- deep style: the same, but scored by every job at the same deep layers (conv4_1, conv5_1)
  whatever layers it optimised, from its result.png: how much of the painting's large-scale
  structure it has, comparable down a column of Fig. 3;
- likeness to the photo, and to the painting: the correlation of result.png's pixels with the
  content photo's, and with the first style image's stretched to the photo's shape (as init=style
  starts), at the run's size: how much of either picture's own layout and colours the result
  keeps, which the content loss at one deep layer barely sees (CVPR Fig. 6's starts).

    python scripts/loss_table.py outputs/experiments/fig3/<time>
    python scripts/loss_table.py SWEEP_DIR --json    # a list of {job, settings, content_rel, ...}
"""

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from job_table import print_job_table  # scripts/, beside this one

from nst_tf.cache import default_cache_dir
from nst_tf.compose import on_schema, read_settings, validate
from nst_tf.config import CONF_DIR, RunConfig
from nst_tf.hydra_setup import register_configs
from nst_tf.images import read_rgb, to_array
from nst_tf.report import read_losses
from nst_tf.sweep import SweepJob, format_value

DEEP_LAYERS = ["conv4_1", "conv5_1"]


def job_settings(job_dir: Path) -> RunConfig:
    """The job's own settings, as it recorded them."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        composed = compose("config")
    return validate(on_schema(composed, read_settings(job_dir)))


def at_run_size(settings: RunConfig) -> tuple[RunConfig, Any, Any, Any]:
    """The settings with their precision chosen, the weights, the pictures and the pictures at
    the run's size: what scoring an image against a run's objective needs."""
    # Here, not at the top: --help and a wrong sweep dir answer without loading TensorFlow.
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
    from nst_tf.pictures import read_pictures
    from nst_tf.session import SESSION

    cache = default_cache_dir()
    folder = Path(settings.paths.images) if settings.paths.images else None
    pictures = read_pictures(settings, folder, cache)
    weights = SESSION.weights(settings, cache)
    settings, _ = SESSION.precision(settings, weights, cache)
    return settings, weights, pictures, pictures.at_size(settings.size, settings.color.value)


def losses_at(settings: RunConfig, weights: Any, pictures: Any, stage: Any,
              *images: np.ndarray | str) -> list[dict[str, float]]:
    """The objective of `settings` (as at_run_size gives them, with its weights and pictures) at
    each image: pixels of the run's size, the content photo itself ("photo"), or the white noise
    the run's seed starts from ("noise")."""
    from nst_tf.objective import loss_weights
    from nst_tf.pictures import initial_image
    from nst_tf.session import SESSION

    transfer, _ = SESSION.transfer(settings, weights, stage.content.shape[:2])
    styles = list(zip(stage.styles, pictures.blend, strict=True))
    values = []
    for image in images:
        if isinstance(image, np.ndarray):
            pixels = image
        elif image == "photo":
            pixels = stage.content
        elif image == "noise":
            pixels = initial_image("noise", stage.content, stage.content, settings.seed,
                                   settings.model.backbone)
        else:
            raise ValueError(f"not an image: {image!r}")
        transfer.start(stage.content, styles, np.asarray(pixels, np.float32),
                       loss_weights(settings))
        values.append(transfer.evaluate())
    return values


def likeness(image: np.ndarray, other: np.ndarray) -> float:
    """The correlation of two same-shape images' pixel values (1: the same picture up to
    brightness and contrast, 0: unrelated)."""
    return float(np.corrcoef(np.ravel(image), np.ravel(other))[0, 1])


def rows(jobs: Iterable[SweepJob]) -> Iterator[dict[str, Any]]:
    """One row per finished job, as it is measured: its dir name, swept settings, three loss
    ratios and two likenesses."""
    for job in jobs:
        if job.status != "ok":
            continue
        losses = read_losses(job.dir / "losses.csv")
        own, weights, pictures, stage = at_run_size(job_settings(job.dir))
        deep = replace(own, style_layers=DEEP_LAYERS, style_layer_weights=None)
        result = to_array(read_rgb(job.dir / "result.png"))
        noise, photo = losses_at(own, weights, pictures, stage, "noise", "photo")
        result_deep, photo_deep = losses_at(deep, weights, pictures, stage, result, "photo")
        yield {
            "job": job.dir.name,
            "settings": " ".join(f"{key}={format_value(value)}"
                                 for key, value in job.overrides.items()),
            "content_rel": losses["content"][-1] / noise["content"],
            "style_rel": losses["style"][-1] / photo["style"],
            "deep_style_rel": result_deep["style"] / photo_deep["style"],
            "photo_likeness": likeness(result, stage.content_rgb),
            "painting_likeness": likeness(result, stage.stretched),
        }


def main() -> None:
    print_job_table("scripts/loss_table.py", __doc__, rows, [
        ("content / noise start's", "content_rel", ".3f"),
        ("style / photo's own", "style_rel", ".3g"),
        (f"deep style ({', '.join(DEEP_LAYERS)}) / photo's", "deep_style_rel", ".3g"),
        ("likeness to photo", "photo_likeness", ".3f"),
        ("likeness to painting", "painting_likeness", ".3f")])


if __name__ == "__main__":
    main()
