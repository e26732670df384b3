"""Where downloaded and converted files are kept between runs."""

import os
from pathlib import Path

from nst_tf.errors import UserError


def default_cache_dir() -> Path:
    """`$NST_CACHE`, else `~/.cache/nst-tf`."""
    return Path(os.environ.get("NST_CACHE") or Path.home() / ".cache" / "nst-tf").expanduser()


def check_cache_dir(folder: Path) -> None:
    """Refuse, naming the cause, a cache dir that cannot hold files: not a folder, or not
    writable. Checked before anything is fetched, so no failure is taken for a download's."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"cache dir {folder}: {existing} is a file, not a folder; choose a "
                        "folder with paths.cache=... (or NST_CACHE)")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cache dir {folder}: {existing} is not writable; make it writable or "
                        "choose another with paths.cache=... (or NST_CACHE)")
