"""Assemble a sweep's results into one labelled figure (png + pdf), and rewrite its sweep.csv.

    python scripts/make_figure.py outputs/experiments/fig3/2026-01-01_12-00-00 [--out fig3.png]
"""

import argparse
import sys
from pathlib import Path

from nst_tf.errors import UserError, WriteError, fail
from nst_tf.sweep import read_sweep, write_sweep_figure, write_sweep_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="It also rewrites SWEEP_DIR/sweep.csv (each job's overrides, status, reason and "
        "final losses) from the job dirs as they are now; only a warning if it cannot.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the dir a multirun wrote (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write PATH.png and PATH.pdf (default: SWEEP_DIR/figure)")
    args = parser.parse_args()
    try:
        jobs = read_sweep(args.sweep_dir)
    except UserError as error:
        fail(str(error))
    try:
        print(f"wrote {write_sweep_table(args.sweep_dir, jobs)}")
    except WriteError as error:  # the figure can still go elsewhere with --out
        print(f"nst-tf: warning: cannot rewrite {error.path} ({error.reason})", file=sys.stderr)
    try:
        paths = write_sweep_figure(args.sweep_dir, args.out, jobs)
    except UserError as error:
        fail(str(error))
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
