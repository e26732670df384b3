"""A legacy `torch.save` file read without torch: the offline VGG19 copy's format (WEIGHTS.md in
the shared notes). A restricted unpickler admits only the format's own opcodes and globals,
with immutable stand-ins, and bounds every count and tensor by the bytes the file has."""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
from collections import OrderedDict
from typing import IO, Any, NamedTuple

import numpy as np

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
