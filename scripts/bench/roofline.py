"""The roofline's two ends: analytic FLOPs of one step, and the GEMM peaks it is measured
against, TensorFlow's (in this process) and NumPy's (in a subprocess of its own)."""

from __future__ import annotations

import ctypes
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from . import ENTRY, ROOT
from .harness import time_calls

# Set in some environments to pin OpenBLAS to an older kernel; they slow NumPy's GEMM down, so
# NumPy's peak is measured without them (and the report says what they were).
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def vgg_flops(extractor, style_layers: Sequence[str], height: int, width: int
              ) -> dict[str, Any]:
    """Analytic FLOPs of one objective-and-gradient evaluation, counting:

    - every conv of the backbone up to the deepest layer used: forward 2·H·W·Cin·Cout·9 (a
      multiply-add is 2 FLOPs), and the input-gradient backward, the same again (weights are
      frozen, so no weight gradient is computed);
    - the Gram matrix G = FᵀF of each style layer: 2·M·N² forward, 4·M·N² backward (the two
      matmuls TensorFlow's MatMul gradient makes, one per operand).

    Not counted: ReLU, pooling, the loss reductions and L-BFGS's vector work (all O(H·W·C)).
    """
    import keras

    x = keras.KerasTensor((1, height, width, 3))
    convs = []
    for layer in extractor.model.layers[1:]:
        y = layer.compute_output_spec(x)
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = y.shape
            kh, kw = layer.kernel_size
            forward = 2 * h * w * x.shape[-1] * c_out * kh * kw
            convs.append({"layer": layer.name, "height": h, "width": w, "c_in": x.shape[-1],
                          "c_out": c_out, "forward": forward, "backward": forward})
        x = y
    shapes = extractor.feature_shapes(height, width)
    grams = []
    for name in style_layers:
        _, h, w, n = shapes[name]
        grams.append({"layer": name, "m": h * w, "n": n,
                      "forward": 2 * h * w * n * n, "backward": 4 * h * w * n * n})
    conv_total = sum(c["forward"] + c["backward"] for c in convs)
    gram_total = sum(g["forward"] + g["backward"] for g in grams)
    return {"height": height, "width": width, "deepest_layer": extractor.layers[-1],
            "convs": convs, "grams": grams, "conv_flops": conv_total, "gram_flops": gram_total,
            "total_flops": conv_total + gram_total}


def matmul_peak(precision: str, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Best GFLOP/s of n×n×n GEMMs in `precision`, as tf.matmul and as a 1×1 convolution.

    Both forms: TensorFlow routes them to different oneDNN kernels, and the peak is the best
    TensorFlow does on a GEMM, whichever route gets it.
    """
    import tensorflow as tf

    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[precision]
    forms: dict[str, float] = {}
    for n in sizes:
        a = tf.cast(tf.random.stateless_normal([n, n], seed=[1, 2]), dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], seed=[3, 4]), dtype)
        rows = max(1, n // 64)
        image = tf.reshape(a, [1, 64, rows, n]) if n % 64 == 0 else tf.reshape(a, [1, 1, n, n])
        kernel = tf.reshape(b, [1, 1, n, n])
        candidates = {
            f"matmul {n}": (tf.function(tf.matmul), (a, b)),
            f"conv1x1 {n}": (tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "VALID")),
                             (image, kernel)),
        }
        for label, (fn, args) in candidates.items():
            times = time_calls(lambda fn=fn, args=args: fn(*args).numpy(), repeats)
            forms[label] = 2 * n**3 / min(times) / 1e9
    best = max(forms, key=forms.get)
    return {"precision": precision, "gflops": forms[best], "best_form": best, "forms": forms}


def numpy_peak(sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """NumPy's best float32 GEMM, measured in a fresh process without `OPENBLAS_PINS`."""
    env = {key: value for key, value in os.environ.items() if key not in OPENBLAS_PINS}
    command = [sys.executable, str(ENTRY), "probe-numpy", str(repeats), *map(str, sizes)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"numpy probe failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["unset"] = {key: os.environ[key] for key in OPENBLAS_PINS if key in os.environ}
    return result


def probe_numpy(sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Run in a fresh process: n×n×n float32 `a @ b`, best of `repeats` per n; the BLAS used."""
    import numpy as np

    rng = np.random.default_rng(0)
    forms = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        times = time_calls(lambda a=a, b=b: a @ b, repeats)
        forms[f"matmul {n}"] = 2 * n**3 / min(times) / 1e9
    best = max(forms, key=forms.get)
    return {"precision": "fp32", "gflops": forms[best], "best_form": best, "forms": forms,
            "numpy": np.__version__, "blas": blas_info()}


def blas_info() -> dict[str, Any]:
    """Which BLAS NumPy uses and which kernel it picked: threadpoolctl's view where installed,
    else numpy.show_config() (the build) and OpenBLAS's own answer (the kernel at run time)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        return {"via": "threadpoolctl", "libraries": threadpool_info()}
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        build: Any = {key: blas.get(key) for key in ("name", "version", "openblas configuration")}
    except TypeError:  # NumPy before 1.26 only prints it
        text = io.StringIO()
        with redirect_stdout(text):
            np.show_config()
        build = text.getvalue()
    return {"via": "numpy.show_config", "build": build, "runtime": openblas_runtime()}


def openblas_runtime() -> list[dict[str, Any]]:
    """The core type, configuration and threads each OpenBLAS loaded here reports (Linux)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    libraries = sorted({line.split()[-1] for line in maps.read_text().splitlines()
                        if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    found = []
    for path in libraries:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        entry: dict[str, Any] = {"library": path}
        for key, stem, restype in (("corename", "get_corename", ctypes.c_char_p),
                                   ("config", "get_config", ctypes.c_char_p),
                                   ("threads", "get_num_threads", ctypes.c_int)):
            for prefix in ("openblas_", "scipy_openblas_"):
                for suffix in ("", "64_"):
                    function = getattr(library, f"{prefix}{stem}{suffix}", None)
                    if function is not None and key not in entry:
                        function.restype = restype
                        value = function()
                        entry[key] = value.decode() if isinstance(value, bytes) else value
        found.append(entry)
    return found


def blas_label(peak: Mapping[str, Any]) -> str:
    """'NumPy 2.4.6, openblas 0.3.31 (SkylakeX kernel, 2 threads)', from `probe_numpy`."""
    info = peak.get("blas") or {}
    if info.get("via") == "threadpoolctl":
        parts = [f"{lib.get('internal_api')} {lib.get('version')} "
                 f"({lib.get('architecture')} kernel, {lib.get('num_threads')} threads)"
                 for lib in info.get("libraries", []) if lib.get("user_api") == "blas"]
        blas = "; ".join(parts) or "no BLAS found by threadpoolctl"
    else:
        build = info.get("build")
        name = (f"{build.get('name')} {build.get('version')}" if isinstance(build, dict)
                else "see numpy.show_config()")
        runtime = [f"{r['corename']} kernel, {r.get('threads')} threads"
                   for r in info.get("runtime", []) if r.get("corename")]
        blas = name + (f" ({'; '.join(runtime)})" if runtime else "")
    return f"NumPy {peak.get('numpy', '?')}, {blas}"
