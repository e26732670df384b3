"""Where downloaded and converted files are kept between runs."""

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """`$NST_CACHE`, else `~/.cache/nst-tf`."""
    return Path(os.environ.get("NST_CACHE") or Path.home() / ".cache" / "nst-tf").expanduser()
