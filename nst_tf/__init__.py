"""nst-tf: Gatys, Ecker & Bethge neural style transfer in TensorFlow/Keras.

`nst_tf.stylize(content, style, **settings)` runs one transfer from Python, and
`nst_tf.stylize_batch([settings, ...])` many, batched where they can share a compiled step,
and `nst_tf.stylize_video(clip, style, **settings)` a clip, frame by frame.
Importing the package loads no TensorFlow; a run does.
"""

from typing import Any

__all__ = ["stylize", "stylize_batch", "stylize_video"]


def __getattr__(name: str) -> Any:
    # The API module imports Hydra; only a user of it pays for that.
    if name in __all__:
        from nst_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'nst_tf' has no attribute {name!r}")
