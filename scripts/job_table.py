"""The command line that scripts/loss_table.py and scripts/image_stats.py share: one sweep dir
in, a row per finished job out (Markdown, or JSON with --json), a wrong dir one line."""

import argparse
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from nst_tf.errors import UserError, fail
from nst_tf.sweep import SweepJob, read_sweep


def print_job_table(prog: str, doc: str, rows: Callable[[list[SweepJob]], Iterable[dict]],
                    columns: Sequence[tuple[str, str, str]]) -> None:
    """A script's command line over one sweep dir: a row per job (`rows`), each printed as soon
    as it is measured, as Markdown (`columns`: header, key, format) or, with --json, a list."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="the dir a multirun wrote (hydra.sweep.dir)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of rows instead of the Markdown table")
    args = parser.parse_args()
    try:
        jobs = read_sweep(args.sweep_dir)  # a wrong dir: one line before anything is printed
        if args.json:
            print(json.dumps(list(rows(jobs)), indent=1))
            return
        print("| job | settings | " + " | ".join(header for header, _, _ in columns) + " |")
        print("|---|---|" + "---|" * len(columns), flush=True)
        for row in rows(jobs):
            print(f"| {row['job']} | {row['settings']} | "
                  + " | ".join(format(row[key], spec) for _, key, spec in columns) + " |",
                  flush=True)
    except UserError as error:
        fail(str(error))
