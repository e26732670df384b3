"""Measure the performance of nst-tf and write docs/PERFORMANCE.md and docs/performance.json.

    python scripts/bench.py               # the full benchmark (~30 min on a 2-core CPU)
    python scripts/bench.py --quick --out /tmp/bench   # every section at tiny sizes
"""

import os
from pathlib import Path

from nst_tf.benchmark import main

if __name__ == "__main__":
    # Like the Makefile: the paper's images from ../shared/images when nothing else is set.
    shared = Path(__file__).resolve().parents[2] / "shared" / "images"
    if "NST_IMAGES" not in os.environ and shared.is_dir():
        os.environ["NST_IMAGES"] = str(shared)
    main()
