"""The style terms after Gram matrices (nst_tf.style_losses) against float64 NumPy readings of
their papers, on tiny random features; their known zeros; a batch's members apart; one run."""

import json

import numpy as np
import pytest
import tensorflow as tf

from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import Targets
from nst_tf.model import FeatureExtractor
from nst_tf.style_losses import (
    HistogramLoss,
    MrfLoss,
    Padded,
    SlicedWassersteinLoss,
    mrf_energy,
    sliced_wasserstein,
)
from nst_tf.transfer import Member, StyleTransfer, Weights
from tests.helpers import read_csv, run_here

RNG = np.random.default_rng(0)
ADAM = {"learning_rate": 10.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}


def stack(batch, arrays_by_member, tail):
    padded = Padded(batch, tail, "test")
    for member, arrays in enumerate(arrays_by_member):
        padded.put(member, arrays)
    return padded


# --- NumPy, from the papers ------------------------------------------------------------------


def np_sorted_at(values: np.ndarray, m: int) -> np.ndarray:
    """Sorted values (P, D) at m ranks, each repeated as Heitz et al. repeat the example's."""
    ordered = np.sort(values, axis=0)
    return ordered[(np.arange(m) * len(ordered)) // m]


def np_sliced_wasserstein(f, styles, weights, directions):
    """Heitz et al.: mean over positions and directions of (sorted result − sorted style)²."""
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    target = sum(w * np_sorted_at(s @ directions, len(flat))
                 for s, w in zip(styles, weights, strict=True))
    return np.mean((np.sort(flat @ directions, axis=0) - target) ** 2)


def np_histogram(f, target_sorted):
    """Risser et al.: ||F − R(F)||², R remapping each channel's i-th smallest value to the
    target's i-th."""
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    ranks = np.argsort(np.argsort(flat, axis=0), axis=0)
    remapped = np.take_along_axis(target_sorted, ranks, axis=0)
    return np.sum((flat - remapped) ** 2)


def np_patches(f, k, stride=1):
    h, w, _ = f.shape
    return np.array([f[i:i + k, j:j + k].reshape(-1) for i in range(0, h - k + 1, stride)
                     for j in range(0, w - k + 1, stride)], np.float64)


def np_mrf(f, styles, weights, k):
    """Li & Wand: Σ_i ||Ψ_i − Ψ_NN(i)||², NN by normalised cross-correlation."""
    result, total = np_patches(f, k), 0.0
    for s, w in zip(styles, weights, strict=True):
        style = np_patches(s, k)
        ncc = (result @ style.T) / np.linalg.norm(style, axis=1) / np.linalg.norm(
            result, axis=1)[:, None]
        total += w * np.sum((result - style[np.argmax(ncc, axis=1)]) ** 2)
    return total


def numeric_grad(fn, x, eps=1e-3, count=6):
    """Central differences of fn at `count` random entries of x."""
    flat = x.reshape(-1)
    picks = RNG.choice(flat.size, count, replace=False)
    grads = []
    for i in picks:
        up, down = flat.copy(), flat.copy()
        up[i] += eps
        down[i] -= eps
        grads.append((fn(up.reshape(x.shape)) - fn(down.reshape(x.shape))) / (2 * eps))
    return picks, np.array(grads)


def tf_grad(fn, x):
    v = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(v)
        value = fn(v)
    return value.numpy(), tape.gradient(value, v).numpy()


# --- values and gradients against NumPy ------------------------------------------------------


def test_sliced_wasserstein_matches_numpy():
    f = RNG.normal(size=(1, 6, 5, 4)).astype(np.float32)  # M = 30
    styles = [RNG.normal(size=(12, 4)), RNG.normal(1, 2, size=(45, 4))]  # other sizes than M
    weights = [0.25, 0.75]
    directions = RNG.normal(size=(4, 4))
    directions /= np.linalg.norm(directions, axis=0)
    store, blend = stack(1, [styles], [4]), tf.constant([weights], tf.float32)
    value, grad = tf_grad(lambda x: sliced_wasserstein(
        x, store, blend, tf.constant(directions, tf.float32))[0], f)
    assert value == pytest.approx(np_sliced_wasserstein(f[0], styles, weights, directions),
                                  rel=1e-5)
    picks, want = numeric_grad(lambda x: np_sliced_wasserstein(x[0], styles, weights,
                                                               directions), f.astype(np.float64))
    np.testing.assert_allclose(grad.reshape(-1)[picks], want, rtol=1e-3, atol=1e-6)


def test_sliced_wasserstein_is_zero_exactly_when_the_sorted_projections_match():
    style = RNG.normal(size=(20, 3)).astype(np.float32)
    directions = tf.constant(RNG.normal(size=(3, 3)), tf.float32)
    store, blend = stack(1, [[style]], [3]), tf.ones([1, 1])
    shuffled = RNG.permutation(style).reshape(1, 4, 5, 3)  # the style's positions, reordered
    # 0 but for the round-off of projecting the same vectors in another order (~1e-16)
    assert sliced_wasserstein(tf.constant(shuffled), store, blend, directions)[0] < 1e-12
    moved = shuffled.copy()
    moved[0, 0, 0, 0] += 0.01
    assert sliced_wasserstein(tf.constant(moved), store, blend, directions)[0] > 1e-7


def test_histogram_matches_risser_remapping():
    loss = HistogramLoss(["x"])
    f = RNG.normal(size=(1, 5, 4, 3)).astype(np.float32)
    style = RNG.normal(2, 3, size=(7, 9, 3))
    target = np_sorted_at(style.reshape(-1, 3), 20)
    loss.targets = {"x": tf.constant(target[None], tf.float32)}
    value, grad = tf_grad(lambda x: loss.layer_value(x, "x")[0], f)
    assert value == pytest.approx(np_histogram(f[0], target), rel=1e-5)
    # Risser et al.'s gradient: 2(F − R(F)), R held fixed
    flat = f[0].reshape(-1, 3).astype(np.float64)
    remapped = np.take_along_axis(target, np.argsort(np.argsort(flat, axis=0), axis=0), axis=0)
    np.testing.assert_allclose(grad[0].reshape(-1, 3), 2 * (flat - remapped), rtol=1e-4,
                               atol=1e-4)


def test_mrf_matches_numpy():
    f = RNG.normal(size=(1, 5, 6, 2)).astype(np.float32)
    styles = [RNG.normal(size=(4, 5, 2)), RNG.normal(size=(6, 4, 2))]
    weights = [0.4, 0.6]
    store = stack(1, [[np_patches(s, 3) for s in styles]], [18])
    q = (5 - 2) * (6 - 2)
    patch_weights = tf.constant([[[w] * q for w in weights]], tf.float32)
    value, grad = tf_grad(lambda x: mrf_energy(x, store, patch_weights, 3)[0], f)
    assert value == pytest.approx(np_mrf(f[0], styles, weights, 3), rel=1e-5)
    # The matches are piecewise constant: away from ties, the gradient is 2 Σ (Ψ_i − Ψ_NN(i)).
    picks, want = numeric_grad(lambda x: np_mrf(x[0], styles, weights, 3), f.astype(np.float64),
                               eps=1e-4)
    np.testing.assert_allclose(grad.reshape(-1)[picks], want, rtol=1e-3, atol=1e-4)


def test_mrf_is_zero_on_the_style_patches():
    style = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    store = stack(1, [[np_patches(style[0], 3)]], [18])
    weights = tf.ones([1, 1, 9])
    assert mrf_energy(tf.constant(style), store, weights, 3)[0] == 0.0
    other = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    assert mrf_energy(tf.constant(other), store, weights, 3)[0] > 0.0


# --- the terms in a compiled step's state, with the real network ------------------------------


@pytest.fixture(scope="module")
def setup(vgg_weights, images_dir):
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", ["conv1_1", "conv2_1", "conv3_1"])
    style = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), 40))
    other = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 48))
    return extractor, style, other


TERMS = {
    "sliced_wasserstein": lambda: SlicedWassersteinLoss(["conv1_1", "conv2_1"], seed=3),
    "histogram": lambda: HistogramLoss(["conv1_1", "conv3_1"]),
    "mrf": lambda: MrfLoss(["conv2_1", "conv3_1"], patch_size=3, stride=1),
}


def values(extractor, term, images, styles):
    """Each member's value of `term` with images (B, H, W, 3) against its own styles."""
    term.build(extractor, images.shape[1:3], len(images))
    for member, blend in enumerate(styles):
        term.start(member, Targets(images[member], blend), {})
    return term.value(extractor(tf.constant(images)), tf.constant(images)).numpy()


@pytest.mark.parametrize("kind", ["histogram", "mrf"])
def test_zero_on_the_style_image_itself(setup, kind):
    extractor, style, other = setup
    assert values(extractor, TERMS[kind](), style[None], [[(style, 1.0)]])[0] == 0.0
    assert values(extractor, TERMS[kind](), style[None], [[(other, 1.0)]])[0] > 0.0


def test_mrf_masks_route_each_style_to_its_region(setup):
    """The style image, guided entirely to itself, is 0 beside another style masked out; the
    masks swapped, it is not."""
    extractor, style, other = setup
    image = np.ascontiguousarray(style[:28, :28]).astype(np.float32)
    ones, zeros = np.ones((28, 28), np.float32), np.zeros((28, 28), np.float32)

    def guided(masks):
        term = TERMS["mrf"]()
        term.build(extractor, (28, 28), 1)
        term.start(0, Targets(image, [(image, 1.0), (other, 1.0)], masks), {})
        return term.value(extractor(tf.constant(image[None])), None).numpy()[0]

    assert guided([ones, zeros]) == 0.0
    assert guided([zeros, ones]) > 0.0


@pytest.mark.parametrize("kind", list(TERMS))
def test_batch_members_each_their_own(setup, kind):
    """Two members with other styles (one a blend of two) each get the value they get alone."""
    extractor, style, other = setup
    images = np.stack([other[:28, :28], style[:28, :28]]).astype(np.float32)
    blends = [[(style, 1.0)], [(other, 1.0), (style, 3.0)]]
    together = values(extractor, TERMS[kind](), images, blends)
    alone = [values(extractor, TERMS[kind](), images[i:i + 1], blends[i:i + 1])[0]
             for i in range(2)]
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    assert together[0] != pytest.approx(together[1], rel=1e-3)


@pytest.mark.parametrize("kind", list(TERMS))
def test_in_the_compiled_step(setup, kind):
    """Targets of other counts and sizes than the step was traced with (a blend of two styles
    beside one) give the values the term gives alone, and the optimiser lowers them."""
    extractor, style, other = setup
    images = np.stack([other[:28, :28], style[:28, :28]]).astype(np.float32)
    blends = [[(style, 1.0)], [(other, 1.0), (style[:20], 3.0)]]
    transfer = StyleTransfer(extractor, [TERMS[kind]()], (28, 28), "adam", ADAM, batch=2)
    weights = Weights({"style": 1.0, "histogram": 1.0})
    transfer.start_batch([Member(images[i], blends[i], images[i], weights) for i in range(2)])
    first = transfer.evaluate_values()[:, 1]
    np.testing.assert_allclose(first, values(extractor, TERMS[kind](), images, blends),
                               rtol=1e-4)
    for _ in range(5):
        transfer.step_values()
    assert np.all(transfer.evaluate_values()[:, 1] < first)


def test_sliced_wasserstein_redraws_its_directions_from_the_seed(setup):
    extractor, style, other = setup
    image = other[None, :28, :28].astype(np.float32)

    def evaluations(seed, count=3):
        term = SlicedWassersteinLoss(["conv1_1"], seed)
        term.build(extractor, image.shape[1:3], 1)
        term.start(0, Targets(image[0], [(style, 1.0)]), {})
        features = extractor(tf.constant(image))
        return [float(term.value(features, tf.constant(image))[0]) for _ in range(count)]

    first = evaluations(5)
    assert len(set(first)) == 3  # new directions each evaluation
    assert evaluations(5) == first  # and the same ones in every run of the seed
    assert evaluations(6) != first


def test_a_run_with_sliced_wasserstein(tmp_path):
    out = tmp_path / "run"
    done = run_here(out, "style_loss=sliced_wasserstein", "size=32", "iterations=3",
                    "save_every=0")
    assert done["status"] == "ok", done["reason"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["style_loss"]["name"] == "sliced_wasserstein"
    assert summary["config"]["style_loss"]["layers"][-1] == "conv4_4"  # Heitz et al.'s last
    rows = read_csv(out / "losses.csv")
    assert len(rows) == 4 and all(np.isfinite(row["style"]) and row["style"] > 0 for row in rows)


# --- settings: the config group's keys, and what is refused --------------------------------


def settings(**style_loss):
    from nst_tf.config import RunConfig, StyleLossConfig, StyleLossKind
    from nst_tf.optimizer_config import LbfgsConfig

    kind = StyleLossKind(style_loss.pop("name", "gram"))
    return RunConfig(optimizer=LbfgsConfig(), style_loss=StyleLossConfig(kind, **style_loss))


def test_each_kind_builds_its_terms_weighted_by_beta():
    from nst_tf.objective import loss_terms, loss_weights
    from nst_tf.tiling import tileable

    gram = settings()
    assert [t.name for t in loss_terms(gram)] == ["content", "style", "tv"]
    assert loss_weights(gram).terms == {"content": 1e-3, "style": 1.0, "tv": 0.0}
    assert all(tileable(term) for term in loss_terms(gram))
    for kind, names in [("mrf", ["content", "style", "tv"]),
                        ("sliced_wasserstein", ["content", "style", "tv"]),
                        ("histogram", ["content", "style", "histogram", "tv"])]:
        run = settings(name=kind, layers=["conv1_1", "conv3_1"], weight=0.5)
        run.beta = 4.0
        terms = loss_terms(run)
        assert [t.name for t in terms] == names
        assert [tileable(t) for t in terms].count(False) == 1
        weights = loss_weights(run)
        term = "histogram" if kind == "histogram" else "style"
        assert weights.terms[term] == 2.0
        assert weights.layers[term] == {"conv1_1": 0.5, "conv3_1": 0.5}
    assert loss_weights(settings(name="histogram", layers=["conv1_1"])).terms["style"] == 1.0


@pytest.mark.parametrize("change, words", [
    ({"tile": "128"}, "cannot be computed in tiles"),
    ({"styles": "masked"}, "styles with masks need style_loss=gram or mrf"),
    ({"layers": []}, "has no layers"),
    ({"layers": ["conv9_9"]}, "no VGG19 layer 'conv9_9'"),
    ({"patch_size": 0}, "style_loss.patch_size=0 must be >= 1"),
    ({"weight": -1.0}, "style_loss.weight=-1.0 is negative"),
])
def test_refused_in_one_line(change, words):
    from nst_tf.config import StyleBlend, check
    from nst_tf.errors import UserError

    run = settings(name="sliced_wasserstein", layers=change.get("layers", ["conv1_1"]),
                   patch_size=change.get("patch_size", 3), weight=change.get("weight", 1.0))
    run.tile = change.get("tile", "auto")
    if "styles" in change:
        run.styles = [StyleBlend(preset="starry", mask="a.png")]
    with pytest.raises(UserError, match=words):
        check(run)
    check(settings(name="mrf", layers=["conv3_1"]))  # and the same with its setting is fine


def test_gram_reads_style_layers_only():
    from nst_tf.config import check
    from nst_tf.errors import UserError

    with pytest.raises(UserError, match="style_loss=gram reads style_layers"):
        check(settings(layers=["conv1_1"]))



# --- memory: what the terms keep, counted before anything is built ---------------------------


def kept_bytes(term):
    """Bytes of every variable the term built, its targets and style state."""
    found, seen = 0, set()

    def walk(node):
        nonlocal found
        if isinstance(node, tf.Variable) and id(node) not in seen:
            seen.add(id(node))
            found += int(tf.size(node)) * 4
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, Padded):
            walk(vars(node))

    walk(vars(term))
    return found


@pytest.mark.parametrize("kind", list(TERMS))
def test_state_bytes_count_what_each_term_keeps(setup, kind):
    from nst_tf.backbones.vgg import VGG19

    extractor, style, other = setup
    image = np.ascontiguousarray(other[:28, :28]).astype(np.float32)
    term = TERMS[kind]()
    values(extractor, term, image[None], [[(style, 1.0)]])
    kept = kept_bytes(term)
    style_size = (style.shape[1], style.shape[0])
    estimate = term.state_bytes(VGG19, (28, 28), [style_size])
    # its variables, and the step's own tensors on top (a few times the state, not more)
    assert kept < estimate < 20 * kept
    larger_style = term.state_bytes(VGG19, (28, 28), [(2 * style_size[0], 2 * style_size[1])])
    larger_image = term.state_bytes(VGG19, (56, 56), [style_size])
    assert larger_image > estimate and (larger_style > estimate) == (kind != "histogram")


def test_the_memory_plan_counts_the_terms_state():
    """At 1024 px, where the Gram run fits whole in what is available, the sliced Wasserstein
    and MRF runs' state does not: refused in one line with a size that fits, whole or tiled."""
    from nst_tf.backbones.vgg import VGG19
    from nst_tf.errors import UserError
    from nst_tf.memory import Parts, estimate_peak, plan_tiling
    from nst_tf.objective import loss_terms

    content = (1024, 768)
    pixels = content[0] * content[1]
    extra = {kind: sum(term.state_bytes(VGG19, content, [content]) for term in loss_terms(
        settings(name=kind, layers=layers) if layers else settings())) for kind, layers in [
        ("gram", None), ("sliced_wasserstein", ["conv1_1", "conv2_1", "conv3_1", "conv4_1"]),
        ("mrf", ["conv3_1", "conv4_1"])]}
    assert extra["gram"] == 0 and extra["sliced_wasserstein"] > 0 and extra["mrf"] > 0
    gram = estimate_peak(pixels, pixels, Parts.of("lbfgs", 50))
    available = gram + 1e6
    for kind in ("sliced_wasserstein", "mrf"):
        parts = Parts.of("lbfgs", 50, term_bytes=extra[kind])
        assert estimate_peak(pixels, pixels, parts) > available
        with pytest.raises(UserError, match=r"^size=1024 \(1024x768 px\) needs about .* GiB"):
            plan_tiling("none", "size", 1024, content, pixels, parts, available)
        # in tiles too: the term keeps the whole image's state (and is not tiled)
        with pytest.raises(UserError, match=r"; use size=[1-9]\d\d or less"):
            plan_tiling("auto", "size", 1024, content, pixels, parts, available)
    whole = plan_tiling("auto", "size", 1024, content, pixels, Parts.of("lbfgs", 50), available)
    assert whole.tile is None and whole.estimate == gram


# --- with the rest: bf16, a clip ---------------------------------------------------------------

LATER_TERMS = ("mrf", "histogram", "sliced_wasserstein")


def each_later_term(folder, *overrides):
    """Each later term's run of `scripts/run.py OVERRIDES` (in this process): its name, summary
    and losses rows."""
    for name in LATER_TERMS:
        summary = run_here(folder / name, f"style_loss={name}", *overrides)
        yield name, summary, read_csv(folder / name / "losses.csv")


def test_each_later_term_runs_in_bf16(tmp_path):
    for name, summary, rows in each_later_term(tmp_path, "+debug=tiny", "iterations=3",
                                               "precision=bf16"):
        assert summary["status"] == "ok", (name, summary.get("reason"))
        assert summary["precision"]["used"] == "bf16", name
        assert all(np.isfinite(row["total"]) for row in rows), name
        assert rows[-1]["total"] < rows[0]["total"], name


def test_each_later_term_stylises_a_two_frame_clip(images_dir, tmp_path):
    from nst_tf.clips import write_video
    from tests.clips import make_clip

    clip = tmp_path / "pan.mp4"
    write_video(list(make_clip(images_dir / "tubingen.jpg", frames=2, size=(64, 48)).frames),
                clip, 12.5)
    for name, summary, rows in each_later_term(tmp_path, f"content.path={clip}", "+debug=tiny",
                                               "size=40", "iterations=4", "precision=fp32"):
        assert summary["status"] == "ok", (name, summary.get("reason"))
        second = [row for row in rows if row["frame"] == 1]
        assert second and second[-1]["temporal"] > 0, name  # tied to the first frame
        assert all(np.isfinite(row["style"]) for row in rows), name
