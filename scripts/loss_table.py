"""A sweep's final losses as numbers that can be read across panels (docs/REPRODUCTION.md):

    python scripts/loss_table.py SWEEP_DIR

For each finished job: the unweighted content loss relative to the noise start's (row 0 of its
losses.csv: 1 = as far from the photo as noise, 0 = the photo), and the unweighted style loss
relative to the photo's own (the content image scored against the job's style target: 1 = as
little style as the photo, 0 = the style's Grams exactly). Prints a markdown table.
"""

import argparse
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
from nst_tf import pipeline
from nst_tf.cache import default_cache_dir
from nst_tf.config import CONF_DIR, register_configs, validate
from nst_tf.errors import UserError
from nst_tf.report import read_losses
from nst_tf.resume import on_schema
from nst_tf.rundir import read_settings
from nst_tf.sweep import format_value, read_sweep


def photo_losses(job_dir: Path) -> dict[str, float]:
    """The job's objective at the content photo itself, with the job's own settings."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        composed = compose("config")
    settings = validate(on_schema(composed, read_settings(job_dir)))
    cache = default_cache_dir()
    images = Path(settings.paths.images) if settings.paths.images else None
    pictures = pipeline.read_pictures(settings, images, cache)
    weights = pipeline.model_weights(settings, cache)
    settings, _ = pipeline.resolve_precision(settings, weights, cache)
    stage = pictures.at_size(settings.size, settings.color.value)
    transfer, _ = pipeline.get_transfer(settings, weights, stage.content.shape[:2])
    transfer.start(stage.content, list(zip(stage.styles, pictures.blend, strict=True)),
                   stage.content, pipeline.loss_weights(settings))
    return transfer.evaluate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args()
    try:
        jobs = [job for job in read_sweep(args.sweep_dir) if job.status == "ok"]
    except UserError as error:
        sys.exit(f"nst-tf: error: {error}")
    print("| job | settings | content / noise start's | style / photo's own |")
    print("|---|---|---|---|")
    for job in jobs:
        losses = read_losses(job.dir / "losses.csv")
        photo = photo_losses(job.dir)
        content = losses["content"][-1] / losses["content"][0]
        style = losses["style"][-1] / photo["style"]
        label = " ".join(f"{key}={format_value(value)}" for key, value in job.overrides.items())
        print(f"| {job.dir.name} | {label} | {content:.3f} | {style:.3g} |")
        json.dump({"job": job.dir.name, "content_rel": content, "style_rel": style},
                  sys.stderr)
        print(file=sys.stderr)


if __name__ == "__main__":
    main()
