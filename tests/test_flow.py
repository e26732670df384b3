"""Optical flow, warping and Ruder et al.'s reliability weights (nst_tf/flow.py), on exact
synthetic flows and on the Tübingen test clip (tests/clips.py)."""

import sys

import numpy as np
import pytest
from PIL import Image

from nst_tf.errors import UserError
from nst_tf.flow import FLOW_METHODS, long_term_weights, optical_flow, reliability, warp
from tests.clips import make_clip

cv2 = pytest.importorskip("cv2")

METHODS = ("dis", "farneback")  # deepflow needs OpenCV's contrib build


@pytest.fixture(scope="module")
def photo(images_dir):
    with Image.open(images_dir / "tubingen.jpg") as image:
        return np.asarray(image.convert("RGB").resize((120, 90), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def clip(images_dir):
    return make_clip(images_dir / "tubingen.jpg")


@pytest.fixture(scope="module")
def big_clip(images_dir):
    # At the default 96x72 the 18 px occluder is flat grey and too small for DIS or Farneback
    # to find its motion at all (its estimated flow is -1..+0.8 px a frame, not -3), so no
    # flow-based check can see the disocclusion behind it. Twice the size (box 36 px, 6 px a
    # frame) DIS finds it; see test_mask_marks_the_disocclusion.
    return make_clip(images_dir / "tubingen.jpg", size=(192, 144), box=36, speed=6)


def constant_flow(height, width, dx, dy):
    flow = np.empty((height, width, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


# --- warp -----------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 1, None, 5])  # None: an (H, W) image
def test_warp_with_constant_flow_shifts_exactly(photo, channels):
    image = photo.astype(np.float32)
    if channels == 1:
        image = image[..., :1]
    elif channels is None:
        image = image[..., 1]
    elif channels == 5:  # more than remap's 4 channels at a time
        image = np.concatenate([image, image[..., :2] * 0.5], axis=-1)
    height, width = image.shape[:2]
    out = warp(image, constant_flow(height, width, 3, -2))
    assert out.dtype == np.float32 and out.shape == image.shape
    # out(y, x) = image(y - 2, x + 3), exactly, wherever that is inside the image
    np.testing.assert_array_equal(out[2:, :-3], image[:-2, 3:])
    # borders are replicated: the last 3 columns repeat the image's last column
    np.testing.assert_array_equal(out[2:, -1], image[:-2, -1])


def test_warp_interpolates_bilinearly(photo):
    image = photo.astype(np.float32)
    out = warp(image, constant_flow(*image.shape[:2], 0.5, 0))
    np.testing.assert_allclose(out[:, :-1], (image[:, :-1] + image[:, 1:]) / 2, atol=0.05)


def test_warp_rejects_a_flow_of_another_size(photo):
    with pytest.raises(ValueError, match="differ in size"):
        warp(photo, constant_flow(10, 10, 0, 0))


# --- optical_flow ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_flow_follows_opencv_convention(photo, method):
    # The content moves 3 px right and 2 px down from source to target, so p + (3, 2) in the
    # target is p in the source.
    source = photo[10:80, 10:110]
    target = photo[8:78, 7:107]
    flow = optical_flow(source, target, method)
    assert flow.dtype == np.float32 and flow.shape == (70, 100, 2)
    interior = flow[12:-12, 12:-12].reshape(-1, 2)
    np.testing.assert_allclose(np.median(interior, axis=0), [3, 2], atol=0.25)
    # float frames (0..255) give the same flow as uint8 ones
    np.testing.assert_array_equal(
        optical_flow(source.astype(np.float32), target.astype(np.float32), method), flow)


@pytest.mark.parametrize("method", METHODS)
def test_warped_previous_frame_matches_where_reliable(clip, method):
    frames = clip.frames.astype(np.float32)
    for i in range(1, len(frames)):
        backward = optical_flow(frames[i], frames[i - 1], method)
        c = reliability(backward, optical_flow(frames[i - 1], frames[i], method)) == 1
        # a mask that trusted only a few pixels would make the comparison below meaningless
        assert c.mean() >= 0.7, (i, c.mean())
        warped = np.abs(warp(frames[i - 1], backward) - frames[i])[c].mean()
        unwarped = np.abs(frames[i - 1] - frames[i])[c].mean()
        assert warped * 2 <= unwarped, (i, warped, unwarped)  # measured: 3.5x to 4.7x lower


# DIS marks 86% of the disocclusion (pooled over the clip; 70% to 100% a frame). Farneback's
# windows (15 px) spread the box's motion over the photo it uncovers, in both directions
# alike, so the forward-backward check passes on about half of it (52%): checked only to
# catch a mask blind to it.
@pytest.mark.parametrize(("method", "least"), [("dis", 0.8), ("farneback", 0.4)])
def test_mask_marks_the_disocclusion(big_clip, method, least):
    frames, boxes = big_clip.frames, big_clip.boxes
    uncovered, far = [], []
    for i in range(1, len(frames)):
        c = reliability(optical_flow(frames[i], frames[i - 1], method),
                        optical_flow(frames[i - 1], frames[i], method))
        x0, y0, x1, y1 = boxes[i]
        previous_x0 = boxes[i - 1][0]
        # covered by the box in frame i-1, not in frame i: behind its trailing edge, with a
        # margin of 1 px against the flow's blur along the box's edges
        uncovered.append(c[y0 + 1:y1 - 1, previous_x0 + 1:x0 - 1].ravel())
        away = np.ones(c.shape, bool)
        side = y1 - y0
        away[max(0, y0 - side):y1 + side, max(0, previous_x0 - side):x1 + side] = False
        far.append(c[away])
    uncovered, far = np.concatenate(uncovered), np.concatenate(far)
    assert uncovered.size >= 11 * 4 * 30
    assert (uncovered == 0).mean() >= least, (uncovered == 0).mean()
    assert far.mean() >= 0.8, far.mean()  # measured: DIS 98%, Farneback 95%


# --- reliability on exact flows -------------------------------------------------------------

def test_reliability_forward_backward_check():
    h, w = 20, 30
    forward = constant_flow(h, w, 2, 0)
    c = reliability(constant_flow(h, w, -2, 0), forward)
    assert c.dtype == np.float32 and c.shape == (h, w)
    # consistent everywhere; only the first 2 columns' matches, x - 2, leave the frame
    assert (c[:, :2] == 0).all() and (c[:, 2:] == 1).all()
    # |w̃ + ŵ|² against 0.01 (|w̃|² + |ŵ|²) + 0.5: 0.36 < 0.6076 passes, 0.64 > 0.6184 fails
    assert (reliability(constant_flow(h, w, -2.6, 0), forward)[:, 4:] == 1).all()
    assert (reliability(constant_flow(h, w, -2.8, 0), forward) == 0).all()
    # a moving object that the previous frame does not show (the forward flow misses it)
    assert (reliability(constant_flow(h, w, -2, 0), constant_flow(h, w, 0, 0)) == 0).all()


def test_reliability_motion_boundaries():
    # ŵ_x = g x is exactly consistent with w(q) = -g q / (1 + g); |∇ŵ_x|² = g² = 0.0025 exceeds
    # 0.01 (g x)² + 0.002 only for x <= 4, and x (1 + g) leaves the frame for x >= 38.
    h, w, g = 12, 40, 0.05
    xs = np.arange(w, dtype=np.float32)
    backward, forward = np.zeros((h, w, 2), np.float32), np.zeros((h, w, 2), np.float32)
    backward[..., 0], forward[..., 0] = g * xs, -g * xs / (1 + g)
    c = reliability(backward, forward)
    np.testing.assert_array_equal(c, np.broadcast_to(((xs >= 5) & (xs <= 37)), (h, w)))
    # a step in the flow: both sides of it are motion boundary
    backward[..., 0] = np.where(xs < 20, 0.0, 0.1)
    forward[..., 0] = -backward[..., 0]
    c = reliability(backward, forward)
    assert (c[:, 19:21] == 0).all() and (c[:, :19] == 1).all() and (c[:, 21:-1] == 1).all()


def test_smoothing_spreads_disocclusions_outward_as_ruders_checker():
    # Ruder et al.'s consistencyChecker: disoccluded -1, boundary and outside 0, else 1; a
    # Gaussian of σ 0.8 over 5 taps; clipped to 0..1. Here the matches of columns 0-1 leave the
    # frame, and rows 5-9 x columns 12-16 fail the forward-backward check.
    h, w = 20, 30
    forward = constant_flow(h, w, 2, 0)
    forward[5:10, 10:15] = 0
    backward = constant_flow(h, w, -2, 0)
    hard = reliability(backward, forward)
    assert (hard[5:10, 12:17] == 0).all() and (hard[:, :2] == 0).all() and hard.sum() == (
        h * w - 2 * h - 25)
    np.testing.assert_array_equal(reliability(backward, forward, smoothing=0), hard)
    c = reliability(backward, forward, smoothing=0.8)
    assert c.dtype == np.float32 and c.min() == 0 and c.max() <= 1
    g = np.exp(-np.arange(-2, 3) ** 2 / (2 * 0.8**2))
    w0, w1, w2 = g[2:] / g.sum()
    assert (c[6:9, 13:16] == 0).all()  # well inside the disocclusion
    # beside it (row 7: its rows cover the whole kernel) the -1 pulls c down further than the
    # 0 of the frame's outside does beside that (row 15: far from the disocclusion)
    np.testing.assert_allclose([c[7, 17], c[7, 18], c[15, 2], c[15, 3]],
                               [w0, 1 - 2 * w2, w0 + w1 + w2, 1 - w2], rtol=1e-5)
    np.testing.assert_allclose(c[15, 5:25], 1, rtol=1e-5)  # far from both: reliable


# --- long_term_weights ----------------------------------------------------------------------

def test_long_term_weights_nearest_reliable_reference_wins():
    # one pixel per combination of (c_1, c_2, c_4): references 1, 2 and 4 frames back
    combos = np.array([[(k >> b) & 1 for k in range(8)] for b in range(3)], np.float32)
    masks = [row.reshape(2, 4).copy() for row in combos]
    given = [mask.copy() for mask in masks]
    weights = long_term_weights(masks)
    near, middle, far = (m.ravel() for m in masks)
    expected = [near, middle * (1 - near), far * (1 - near) * (1 - middle)]
    for weight, want in zip(weights, expected, strict=True):
        assert weight.dtype == np.float32 and weight.shape == (2, 4)
        np.testing.assert_array_equal(weight.ravel(), want)
    total = sum(weights)
    assert total.max() <= 1
    np.testing.assert_array_equal(total, np.maximum.reduce(masks))  # reliable somewhere: 1
    # k = 2: unreliable 1 back, reliable 2 and 4 back: tied to 2 back only
    assert [float(w.ravel()[6]) for w in weights] == [0.0, 1.0, 0.0]
    for mask, before in zip(masks, given, strict=True):
        np.testing.assert_array_equal(mask, before)  # inputs untouched
    assert long_term_weights([]) == []


# --- user errors ----------------------------------------------------------------------------

def test_unknown_method_names_the_choices(photo):
    with pytest.raises(UserError) as error:
        optical_flow(photo, photo, "lucas-kanade")
    message = str(error.value)
    assert "\n" not in message and "lucas-kanade" in message
    assert all(method in message for method in FLOW_METHODS)


@pytest.mark.skipif(hasattr(cv2, "optflow"), reason="OpenCV's contrib build has DeepFlow")
def test_deepflow_without_contrib_names_the_fix(photo):
    with pytest.raises(UserError) as error:
        optical_flow(photo, photo, "deepflow")
    assert str(error.value) == ("video.flow=deepflow needs OpenCV's contrib build; pip install "
                                "opencv-contrib-python-headless, or use video.flow=dis")


def test_without_opencv_names_the_extra(photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    for call in (lambda: optical_flow(photo, photo), lambda: warp(photo, np.zeros((90, 120, 2)))):
        with pytest.raises(UserError, match=r"^video needs OpenCV; pip install 'nst-tf\[video\]'$"):
            call()
