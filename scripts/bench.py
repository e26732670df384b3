"""Measure the performance of nst-tf on this machine; write docs/PERFORMANCE.md and
docs/performance.json (the code is in scripts/bench/, beside this file).

    python scripts/bench.py               # the full benchmark (~45 min on a fast 2-core CPU;
                                          # needs an idle machine); adds to the machine history
    python scripts/bench.py --quick --out /tmp/bench   # every section at tiny sizes (smoke test)
    python scripts/bench.py --render      # rewrite docs/PERFORMANCE.md from performance.json
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
