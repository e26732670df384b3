"""Optical flow, warping and the reliability weights of Ruder, Dosovitskiy & Brox 2016,
*Artistic style transfer for videos* (arXiv 1604.08610), for the temporal loss.

Frames are (H, W, 3) RGB arrays in 0..255 (uint8 or float). A flow is (H, W, 2) float32 in
OpenCV's convention: pixel p of the source frame is at p + flow(p) in the target frame, with
flow[..., 0] the x (column) and flow[..., 1] the y (row) displacement. numpy and OpenCV only:
no TensorFlow, so that flows can be computed (and tested) without it.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from nst_tf.errors import UserError

FLOW_METHODS = ("dis", "farneback", "deepflow")

# Ruder et al.'s thresholds for c (temporal consistency loss): the forward-backward check
# (squared px, so that small flows may still disagree by 0.7 px) and the motion boundaries.
_CONSISTENCY_SCALE, _CONSISTENCY_OFFSET = 0.01, 0.5
_BOUNDARY_SCALE, _BOUNDARY_OFFSET = 0.01, 0.002


def _cv2() -> Any:
    # OpenCV is an optional extra: only video needs it, so import it only when it is used.
    try:
        import cv2
    except ImportError:
        raise UserError("video needs OpenCV; pip install 'nst-tf[video]'") from None
    return cv2


def _grey(cv2: Any, frame: np.ndarray) -> np.ndarray:
    # The flow methods take one 8-bit channel.
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)


def _farneback_levels(height: int, width: int) -> int:
    # Enough pyramid levels for large motions in large frames, while the coarsest level keeps
    # at least about 32 px (3 to 5 levels).
    return int(np.clip(np.log2(min(height, width) / 32), 3, 5))


def optical_flow(source: np.ndarray, target: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow (H, W, 2) float32 from frame `source` to frame `target`: pixel p of `source`
    is at p + flow(p) in `target`. `method`: one of FLOW_METHODS."""
    if method not in FLOW_METHODS:
        raise UserError(f"unknown flow method {method!r}; use video.flow= one of "
                        f"{', '.join(FLOW_METHODS)}")
    cv2 = _cv2()
    if np.shape(source)[:2] != np.shape(target)[:2]:
        raise UserError(f"frames differ in size ({np.shape(source)[1]}x{np.shape(source)[0]} "
                        f"and {np.shape(target)[1]}x{np.shape(target)[0]}); resize them alike")
    prev, nxt = _grey(cv2, source), _grey(cv2, target)
    if method == "dis":
        flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(prev, nxt, None)
    elif method == "farneback":
        levels = _farneback_levels(*prev.shape)
        flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, levels, 15, 3, 5, 1.2, 0)
    else:
        # DeepFlow lives in opencv-contrib's optflow module, absent from the plain wheels.
        if not hasattr(cv2, "optflow"):
            raise UserError("video.flow=deepflow needs OpenCV's contrib build; pip install "
                            "opencv-contrib-python-headless, or use video.flow=dis")
        flow = cv2.optflow.createOptFlow_DeepFlow().calc(prev, nxt, None)
    return np.asarray(flow, dtype=np.float32)


def _sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Where each output pixel reads from: p + flow(p), as remap's absolute coordinates.
    height, width = flow.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warping: out(p) = image(p + flow(p)), bilinear, borders replicated; float32,
    (H, W) or (H, W, C) for any C. To bring frame i-1's stylised image into frame i:
    `warp(x_prev, optical_flow(frame_i, frame_prev))`."""
    cv2 = _cv2()
    image = np.asarray(image, dtype=np.float32)
    flow = np.asarray(flow, dtype=np.float32)
    if image.shape[:2] != flow.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and flow {flow.shape[:2]} differ in size")
    map_x, map_y = _sample_maps(flow)

    def remap(channels: np.ndarray) -> np.ndarray:
        return cv2.remap(np.ascontiguousarray(channels), map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    if image.ndim == 2:
        return remap(image)
    # remap takes at most 4 channels at a time; it also drops a trailing axis of length 1.
    parts = [remap(image[..., k:k + 4]).reshape(*image.shape[:2], -1)
             for k in range(0, image.shape[2], 4)]
    return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)


def reliability(backward: np.ndarray, forward: np.ndarray, smoothing: float = 0.0
                ) -> np.ndarray:
    """Ruder et al.'s weight c (H, W) float32 for frame i: `backward` is the flow from frame i
    to frame i-1 (ŵ), `forward` the flow from frame i-1 to frame i (w). c is 0 at
    disocclusions (the forward-backward check fails), at motion boundaries, and where
    p + ŵ(p) leaves the frame; 1 elsewhere. With `smoothing` > 0, as Ruder et al.'s
    consistencyChecker (σ 0.8): disocclusions count -1, the mask is blurred by a Gaussian of
    that σ (px) and clipped to 0..1, so c also falls off around disocclusions, where the flow
    is least trustworthy."""
    backward = np.asarray(backward, dtype=np.float32)
    forward = np.asarray(forward, dtype=np.float32)
    # w̃(p) = w(p + ŵ(p)): the forward flow brought into frame i. Where nothing is occluded,
    # following ŵ and then w returns to p, so w̃ ≈ −ŵ.
    forward_in_i = warp(forward, backward)
    mismatch = np.sum((forward_in_i + backward) ** 2, axis=-1)
    magnitudes = np.sum(forward_in_i**2, axis=-1) + np.sum(backward**2, axis=-1)
    disoccluded = mismatch > _CONSISTENCY_SCALE * magnitudes + _CONSISTENCY_OFFSET
    # Motion boundaries: the flow changes sharply there, and is unreliable on both sides.
    gradient = sum(np.sum(np.square(np.gradient(backward[..., k])), axis=0) for k in (0, 1))
    boundary = gradient > _BOUNDARY_SCALE * np.sum(backward**2, axis=-1) + _BOUNDARY_OFFSET
    # Pixels whose match lies outside frame i-1 have nothing to be consistent with.
    height, width = backward.shape[:2]
    map_x, map_y = _sample_maps(backward)
    outside = (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)
    # As their checker ranks them: outside the frame 0, else disoccluded -1, else boundary 0.
    signed = np.where(disoccluded, -1.0, np.where(boundary, 0.0, 1.0)).astype(np.float32)
    signed[outside] = 0.0
    if smoothing <= 0:
        return (signed > 0).astype(np.float32)
    # Their filter's support: 2σ either side, rounded up (5 taps at σ 0.8); mirrored borders.
    cv2, side = _cv2(), 2 * int(np.ceil(2 * smoothing)) + 1
    blurred = cv2.GaussianBlur(signed, (side, side), smoothing, borderType=cv2.BORDER_REFLECT)
    return np.clip(blurred, 0.0, 1.0)


def long_term_weights(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Ruder et al.'s long-term consistency weights: `masks` are the reliabilities c of the
    references j in J, nearest first; each becomes max(c_j − Σ_{k<j} c_k, 0), so that a pixel
    is tied only to the nearest reference where it is reliable."""
    weights, earlier = [], None
    for mask in masks:
        mask = np.asarray(mask, dtype=np.float32)
        weights.append(mask if earlier is None else np.maximum(mask - earlier, 0.0))
        earlier = mask.copy() if earlier is None else earlier + mask
    return weights
