"""Measure nst-tf on this machine (pytest-benchmark runs `scripts/bench/bench_*.py`) and write
PERFORMANCE.md, benchmark.json and figures into a new folder under outputs/bench/.

    python scripts/bench.py --quick         # every benchmark at tiny sizes: that it runs
    python scripts/bench.py --out docs --peer /tmp/torchvenv/bin/python
                                            # regenerate docs/PERFORMANCE.md (an idle machine)
    python scripts/bench.py --render --out docs   # render docs/benchmark.json again
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
    sys.path.insert(0, str(HERE))  # the `bench` package
    from bench.cli import main

    main()
