"""A sweep's final losses as numbers that can be read across panels (docs/REPRODUCTION.md):

    python scripts/loss_table.py SWEEP_DIR

For each finished job:
- content: the unweighted content loss relative to that of the white noise its seed gives
  (whatever the run started from: 1 = as far from the photo as noise, 0 = the photo);
- style: the unweighted style loss relative to the photo's own (the content image scored
  against the job's style target: 1 = as little style as the photo, 0 = the style's Grams);
- deep style: the same, but scored by every job at the same deep layers (conv4_1, conv5_1)
  whatever layers it optimised, from its result.png: how much of the painting's large-scale
  structure it has, comparable down a column of Fig. 3.
Prints a markdown table.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
from nst_tf import pipeline
from nst_tf.cache import default_cache_dir
from nst_tf.config import CONF_DIR, RunConfig, register_configs, validate
from nst_tf.errors import UserError
from nst_tf.images import read_rgb, to_array
from nst_tf.report import read_losses
from nst_tf.resume import on_schema
from nst_tf.rundir import read_settings
from nst_tf.sweep import format_value, read_sweep

DEEP_LAYERS = ["conv4_1", "conv5_1"]


def job_settings(job_dir: Path) -> RunConfig:
    """The job's own settings, as it recorded them."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        composed = compose("config")
    return validate(on_schema(composed, read_settings(job_dir)))


def losses_at(settings: RunConfig, *images: Path | str) -> list[dict[str, float]]:
    """The objective of `settings` at each image: a file of the run's size, the content photo
    itself ("photo"), or the white noise the run's seed starts from ("noise")."""
    cache = default_cache_dir()
    folder = Path(settings.paths.images) if settings.paths.images else None
    pictures = pipeline.read_pictures(settings, folder, cache)
    weights = pipeline.model_weights(settings, cache)
    settings, _ = pipeline.resolve_precision(settings, weights, cache)
    stage = pictures.at_size(settings.size, settings.color.value)
    transfer, _ = pipeline.get_transfer(settings, weights, stage.content.shape[:2])
    styles = list(zip(stage.styles, pictures.blend, strict=True))
    values = []
    for image in images:
        if image == "photo":
            pixels = stage.content
        elif image == "noise":
            pixels = pipeline.initial_image("noise", stage.content, stage.content, settings.seed,
                                            settings.model.backbone)
        else:
            pixels = to_array(read_rgb(image))
        transfer.start(stage.content, styles, np.asarray(pixels, np.float32),
                       pipeline.loss_weights(settings))
        values.append(transfer.evaluate())
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args()
    try:
        jobs = [job for job in read_sweep(args.sweep_dir) if job.status == "ok"]
    except UserError as error:
        sys.exit(f"nst-tf: error: {error}")
    print("| job | settings | content / noise start's | style / photo's own | "
          f"deep style ({', '.join(DEEP_LAYERS)}) / photo's |")
    print("|---|---|---|---|---|")
    for job in jobs:
        losses = read_losses(job.dir / "losses.csv")
        own = job_settings(job.dir)
        deep = replace(own, style_layers=DEEP_LAYERS, style_layer_weights=None)
        noise, photo = losses_at(own, "noise", "photo")
        result_deep, photo_deep = losses_at(deep, job.dir / "result.png", "photo")
        content = losses["content"][-1] / noise["content"]
        style = losses["style"][-1] / photo["style"]
        deep_style = result_deep["style"] / photo_deep["style"]
        label = " ".join(f"{key}={format_value(value)}" for key, value in job.overrides.items())
        print(f"| {job.dir.name} | {label} | {content:.3f} | {style:.3g} | {deep_style:.3g} |")
        json.dump({"job": job.dir.name, "content_rel": content, "style_rel": style,
                   "deep_style_rel": deep_style}, sys.stderr)
        print(file=sys.stderr)


if __name__ == "__main__":
    main()
