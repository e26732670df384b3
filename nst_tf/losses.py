"""The paper's losses (Gatys, Ecker & Bethge 2015, eqs. 1, 3-5) on one layer's features.

Features are float32 tensors of shape (1, H, W, N): N filters, M = H·W positions.
"""

import tensorflow as tf


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """G_ij = Σ_k F_ik F_jk, an (N, N) matrix."""
    flat = tf.reshape(features, [-1, tf.shape(features)[-1]])
    return tf.matmul(flat, flat, transpose_a=True)


def content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """½ Σ (F − P)²."""
    return 0.5 * tf.reduce_sum(tf.square(features - target))


def style_layer_loss(features: tf.Tensor, target_gram: tf.Tensor) -> tf.Tensor:
    """E_l = 1/(4 N² M²) Σ (G − A)²."""
    shape = tf.shape(features)
    n = tf.cast(shape[-1], tf.float32)
    m = tf.cast(shape[1] * shape[2], tf.float32)
    # Scaling before squaring keeps float32 far from overflow at large M.
    return tf.reduce_sum(tf.square((gram_matrix(features) - target_gram) / (2.0 * n * m)))


def total_variation(image: tf.Tensor) -> tf.Tensor:
    """Σ of squared differences between neighbouring pixels (neural-style's TV loss)."""
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    return tf.reduce_sum(tf.square(dy)) + tf.reduce_sum(tf.square(dx))
