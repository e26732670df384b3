"""Assemble a sweep's results into one labelled figure (png + pdf).

    python scripts/make_figure.py outputs/experiments/fig3/2026-01-01_12-00-00 [--out fig3.png]
"""

import argparse
from pathlib import Path

from nst_tf.errors import UserError, fail
from nst_tf.report import write_sweep_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the dir a multirun wrote (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write PATH.png and PATH.pdf (default: SWEEP_DIR/figure)")
    args = parser.parse_args()
    try:
        paths = write_sweep_figure(args.sweep_dir, args.out)
    except UserError as error:
        fail(str(error))
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
