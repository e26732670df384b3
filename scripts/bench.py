"""Measure the performance of nst-tf on this machine; write PERFORMANCE.md, performance.json and
figures into a new folder under outputs/bench/ (the code is in scripts/bench/, beside this file).

    python scripts/bench.py               # the full benchmark (~45 min on a fast 2-core CPU;
                                          # needs an idle machine)
    python scripts/bench.py --quick       # every section at tiny sizes (smoke test)
    python scripts/bench.py --only batch  # one section alone (batching), into its own folder
    python scripts/bench.py --out docs    # regenerate docs/PERFORMANCE.md and its figures, and
                                          # add this machine to docs/performance_history.json
    python scripts/bench.py --render --out docs   # rewrite docs/PERFORMANCE.md from its json
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    # Like the Makefile: the paper's images from ../shared/images when nothing else is set.
    shared = HERE.parents[1] / "shared" / "images"
    if "NST_IMAGES" not in os.environ and shared.is_dir():
        os.environ["NST_IMAGES"] = str(shared)
    if str(HERE) not in sys.path:  # where the `bench` package is (sys.path[0] when run as a file)
        sys.path.insert(0, str(HERE))
    from bench.cli import main

    main()
