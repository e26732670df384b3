"""3×3, stride-1 'same' convolutions by Winograd's minimal filtering, F(m×m, 3×3), in plain
TensorFlow ops (Lavin & Gray 2016): each m×m output tile costs (m+2)² products per channel
pair instead of 9·m², in one batched matmul over the (m+2)² tile positions.

Exact up to fp32 rounding (the transforms use the points 0, ±1, ±2 and ∞). The kernels are
frozen (style transfer optimises the image), so their transforms are computed once, in NumPy;
the input's gradient is the same kind of convolution, Winograd again. Imported only when a
model is built (it loads TensorFlow and Keras).
"""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

# (Bᵀ, G, Aᵀ) per output tile size m: input, kernel and output transforms.
_TRANSFORMS = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32),
    ),
    4: (
        np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float32),
    ),
}
TILES = tuple(_TRANSFORMS)


def kernel_transform(kernel: np.ndarray, m: int) -> np.ndarray:
    """(3, 3, C, K) -> (α², C, K), U = G g Gᵀ per channel pair, α = m + 2."""
    g = _TRANSFORMS[m][1]
    u = np.einsum("ai,ijck,bj->abck", g, kernel.astype(np.float32), g)
    return u.reshape((m + 2) ** 2, *kernel.shape[2:]).astype(np.float32)


def frozen_conv3x3(kernel: np.ndarray, m: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function equal to `tf.nn.conv2d(x, kernel, 1, "SAME")` for NHWC inputs and this
    frozen (3, 3, C, K) kernel, and its gradient with respect to the input."""
    forward = tf.constant(kernel_transform(kernel, m))
    # The input's gradient: the kernel turned by 180° with its channels swapped, same padding.
    backward = tf.constant(kernel_transform(kernel[::-1, ::-1].transpose(0, 1, 3, 2), m))

    @tf.custom_gradient
    def conv(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        return winograd(x, forward, m), lambda dy: winograd(dy, backward, m)

    return conv


def winograd(x: tf.Tensor, u: tf.Tensor, m: int) -> tf.Tensor:
    """The 'same' 3×3 convolution of NHWC `x` with U = kernel_transform(kernel, m): the tiles
    gathered in one op and each transform one contraction (a pass over memory each; slices and
    sums per tile position made many and ran slower than the direct convolution)."""
    b_t, _, a_t = _TRANSFORMS[m]
    alpha = m + 2
    shape = tf.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    rows, cols = (height + m - 1) // m, (width + m - 1) // m  # output tiles per axis
    # Tiles of α inputs every m: one px of 'same' padding in front, enough behind.
    x = tf.pad(x, [[0, 0], [1, rows * m + 1 - height], [1, cols * m + 1 - width], [0, 0]])
    tiles = tf.image.extract_patches(x, [1, alpha, alpha, 1], [1, m, m, 1], [1, 1, 1, 1],
                                     "VALID")
    tiles = tf.reshape(tiles, [-1, alpha * alpha, x.shape[-1]])  # (tiles, α², C)
    v = tf.einsum("ij,pjc->ipc", np.kron(b_t, b_t), tiles)  # Bᵀ d B: (α², tiles, C)
    products = tf.matmul(v, u)  # (α², tiles, K)
    y = tf.einsum("oi,ipk->pok", np.kron(a_t, a_t), products)  # Aᵀ M A: (tiles, m², K)
    filters = u.shape[-1]
    y = tf.reshape(y, [batch, rows, cols, m, m, filters])
    y = tf.reshape(tf.transpose(y, [0, 1, 3, 2, 4, 5]), [batch, rows * m, cols * m, filters])
    return y[:, :height, :width]


class WinogradConv2D(keras.layers.Conv2D):
    """A 3×3, stride-1 'same' Conv2D whose weights are frozen once set: `freeze()` after
    set_weights computes it by Winograd F(tile×tile, 3×3) from then on."""

    def __init__(self, tile: int, **config: object) -> None:
        super().__init__(**config)
        if tuple(self.kernel_size) != (3, 3) or max(self.strides) > 1 or self.padding != "same":
            raise ValueError(f"{self.name}: Winograd computes 3×3, stride-1 'same' convolutions")
        self.tile = tile
        self._frozen: Callable[[tf.Tensor], tf.Tensor] | None = None

    def freeze(self) -> None:
        self._frozen = frozen_conv3x3(keras.ops.convert_to_numpy(self.kernel), self.tile)

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        if self._frozen is None:
            raise RuntimeError(f"{self.name}: set the weights and freeze() before calling")
        return self._frozen(inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), "tile": self.tile}
