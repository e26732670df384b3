"""nst-tf: Gatys, Ecker & Bethge neural style transfer in TensorFlow/Keras.

`nst_tf.stylize(content, style, **settings)` runs one transfer from Python. Importing the
package loads no TensorFlow; a run does.
"""

from typing import Any

__all__ = ["stylize"]


def __getattr__(name: str) -> Any:
    # The API module imports Hydra; only a user of it pays for that.
    if name == "stylize":
        from nst_tf.api import stylize

        return stylize
    raise AttributeError(f"module 'nst_tf' has no attribute {name!r}")
