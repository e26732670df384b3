"""Where the fp32 step's time goes, and A/B ratios of ways to make it faster (docs/STEP.md).

    python scripts/step_profile.py pieces --size 256
    python scripts/step_profile.py ab model.winograd=true --size 512 --rounds 4
    python scripts/step_profile.py ab jit_compile=true --size 256
    python scripts/step_profile.py env TF_ENABLE_ONEDNN_OPTS=0 --size 256
    python scripts/step_profile.py env NST_THREADS=1,1 --size 256
    python scripts/step_profile.py convs --size 512

`ab` builds the default step and the step with one override, in one process, and times their
steps alternately (ABAB...); `env` does the same across fresh processes, for what TensorFlow
reads only at start-up (NST_THREADS=intra,inter: its thread pools). Ratios are A's time over
B's: above 1, B is faster. Steps are real (`StyleTransfer`, default preset, offline weights);
the images a square crop of the default content and its style. The step's share of the
machine's GEMM peak is the benchmark's: `python scripts/bench.py -k "gemm or step"`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from bench import harness  # scripts/, beside this one


def build(overrides: Sequence[str], size: int):  # -> StyleTransfer, started
    return harness.Builder().started(overrides, size)[1]


def alternate(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Each call's wall seconds, once per round in turn (after one untimed call each); every
    other round in the reverse order, since under load whichever runs first ran ~10% faster."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for turn in range(rounds):
        for name, call in list(calls.items())[::-1 if turn % 2 else 1]:
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return times


def pieces(size: int, rounds: int) -> None:
    """The step's parts, each timed compiled, alternately: the backbone forward, forward and
    backward, the objective and its gradient (adds the losses, Grams included), the whole
    step (adds L-BFGS and the host round trip), and a bare round trip."""
    import tensorflow as tf

    transfer = build([], size)
    image = transfer.image
    probe = tf.random.stateless_normal(image.shape, seed=[0, 1])
    extractor = transfer.extractor

    @tf.function(autograph=False)
    def forward() -> tf.Tensor:
        return tf.add_n([tf.reduce_sum(f) for f in extractor(image).values()])

    @tf.function(autograph=False)
    def backbone() -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(probe)
            total = tf.add_n([tf.reduce_sum(f) for f in extractor(image + probe).values()])
        return tape.gradient(total, probe)

    objective = tf.function(autograph=False,
                            func=lambda: transfer._values_and_grad(image.read_value())[1])
    trip = tf.function(autograph=False, func=lambda: transfer.updates.read_value())
    times = alternate({
        "forward": lambda: forward().numpy(),
        "forward+backward": lambda: backbone().numpy(),
        "objective+gradient": lambda: objective().numpy(),
        "step": transfer.step_values,
        "round trip": lambda: trip().numpy(),
    }, rounds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    step = medians["step"]
    parts = {
        "backbone forward (convs, ReLU, pooling)": medians["forward"],
        "backbone backward": medians["forward+backward"] - medians["forward"],
        "losses: Grams, their gradients, content term": (medians["objective+gradient"]
                                                         - medians["forward+backward"]),
        "L-BFGS two-loop, line search, bookkeeping": step - medians["objective+gradient"],
    }
    print(f"step {size} px, fp32: {step:.3f} s (median of {rounds}); host round trip "
          f"{medians['round trip'] * 1e3:.2f} ms")
    for name, seconds in parts.items():
        print(f"| {name} | {seconds:.3f} s | {seconds / step:.0%} |")


def ab(override: str, size: int, rounds: int) -> None:
    a, b = build([], size), build([override], size)
    times = alternate({"A": a.step_values, "B": b.step_values}, rounds)
    report(f"{override} at {size} px", times)


def env(assignment: str, size: int, rounds: int) -> None:
    """A: this environment; B: with `assignment`; one fresh process per timing."""
    key, _, value = assignment.partition("=")
    variants = {"A": dict(os.environ), "B": {**os.environ, key: value}}
    times: dict[str, list[float]] = {"A": [], "B": []}
    for turn in range(rounds):
        for name, environment in list(variants.items())[::-1 if turn % 2 else 1]:
            done = subprocess.run([sys.executable, __file__, "child", "--size", str(size)],
                                  env=environment, capture_output=True, text=True, check=True)
            times[name].append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    report(f"{assignment} at {size} px (a process per timing)", times)


def child(size: int) -> None:
    """One fresh process's median step time, its thread pools set from NST_THREADS first."""
    import tensorflow as tf

    if "NST_THREADS" in os.environ:
        intra, inter = map(int, os.environ["NST_THREADS"].split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    transfer = build([], size)
    seconds = alternate({"step": transfer.step_values}, 3)["step"]
    print(json.dumps({"seconds": statistics.median(seconds)}))


def convs(size: int, rounds: int) -> None:
    """Each of VGG19's 3×3 conv shapes at `size` (forward + input gradient): the direct
    convolution against Winograd F(2×2, 3×3) and F(4×4, 3×3)."""
    import numpy as np
    import tensorflow as tf

    from nst_tf.backbones.winograd import frozen_conv3x3

    rng = np.random.default_rng(0)
    for side, c_in, c_out in ((size, 64, 64), (size // 2, 128, 128), (size // 4, 256, 256),
                              (size // 8, 256, 512), (size // 8, 512, 512),
                              (size // 16, 512, 512)):
        x = tf.constant(rng.standard_normal((1, side, side, c_in), np.float32))
        kernel = rng.standard_normal((3, 3, c_in, c_out), np.float32) * 0.05
        direct = tf.constant(kernel)
        forms = {"direct": lambda x, direct=direct: tf.nn.conv2d(x, direct, 1, "SAME"),
                 **{f"F{m}": frozen_conv3x3(kernel, m) for m in (2, 4)}}
        calls = {name: _forward_backward(conv, x) for name, conv in forms.items()}
        medians = {name: statistics.median(t) for name, t in alternate(calls, rounds).items()}
        ratios = ", ".join(f"{name} {medians['direct'] / medians[name]:.2f}x"
                           for name in ("F2", "F4"))
        print(f"| {side}x{side} {c_in}->{c_out} | direct {medians['direct'] * 1e3:.0f} ms | "
              f"{ratios} |")


def _forward_backward(conv: Callable, x):  # -> a call returning the input's gradient
    import tensorflow as tf

    @tf.function(autograph=False)
    def run() -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(tf.nn.relu(conv(x)) ** 2)
        return tape.gradient(total, x)

    return lambda: run().numpy()


def report(label: str, times: dict[str, list[float]]) -> None:
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    pairs = sorted(x / y for x, y in zip(times["A"], times["B"], strict=True))
    print(f"{label}: A {a:.3f} s, B {b:.3f} s, A/B {a / b:.2f} (pairs {pairs[0]:.2f}–"
          f"{pairs[-1]:.2f}, {len(pairs)} rounds; load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/step_profile.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("pieces", "ab", "env", "child", "convs"))
    parser.add_argument("change", nargs="?", help="ab: a config override; env: NAME=VALUE")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mode in ("ab", "env") and not args.change:
        parser.error(f"{args.mode} needs what to change, e.g. model.winograd=true")
    import nst_tf._tensorflow  # noqa: F401  (TensorFlow's start-up noise filtered)

    if args.mode in ("pieces", "convs"):
        globals()[args.mode](args.size, args.rounds)
    elif args.mode == "child":
        child(args.size)
    else:
        globals()[args.mode](args.change, args.size, args.rounds)


if __name__ == "__main__":
    main()
