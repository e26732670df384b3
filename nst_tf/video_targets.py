"""A frame's temporal targets (Ruder, Dosovitskiy & Brox 2016): the results already made of the
frames 1 (2, 4) before it in the pass's direction, warped into it by optical flow, with the
reliability of each warp; and what a pass may forget as it goes."""

from typing import Any

import numpy as np

from nst_tf.config import VideoConfig
from nst_tf.objective import frames_back


def previous_results(c: Any, index: int, frame: np.ndarray, results: dict[int, np.ndarray],
                     step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The results already made of the frames 1 (2, 4) before frame `index` in the pass's
    direction (`step` ±1), warped into it, with their reliability weights. `c`: the clip's
    run (video.ClipRun), for its settings and content frames."""
    from nst_tf.flow import long_term_weights, optical_flow, reliability, warp

    video = c.p.settings.video
    warped, reliable = [], []
    for back in frames_back(video):
        other = index - step * back
        if other not in results:
            break
        before = c.contents.get(other)
        if before is None:
            before = c.frame(other).content_rgb
        backward = optical_flow(frame, before, video.flow.value)
        forward = optical_flow(before, frame, video.flow.value)
        warped.append(warp(results[other], backward))
        reliable.append(reliability(backward, forward, video.mask_smoothing))
    forget_far(c.contents, index, video)
    weights = long_term_weights(reliable) if video.long_term else reliable
    return list(zip(warped, weights, strict=True))


def forget_far(kept: dict[int, np.ndarray], index: int, video: VideoConfig) -> None:
    """Drop what the frames after `index` in a pass no longer tie to (long-term: 4 away)."""
    for old in [k for k in kept if abs(k - index) > max(frames_back(video))]:
        del kept[old]
