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


def guided_style_layer_loss(
    features: tf.Tensor, masks: tf.Tensor, target_grams: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
    """Σ_r w_r E_l over regions (Gatys et al. 2017, *Controlling Perceptual Factors*).

    masks: (R, H, W) guidance channels at this layer's resolution; target_grams: (R, N, N).
    Each region's Gram is divided by the mean squared mask, so a region compares with a whole
    style image's Gram at the scale of the full image (an all-ones mask gives E_l exactly).
    """
    shape = tf.shape(features)
    n = tf.cast(shape[-1], tf.float32)
    m = tf.cast(shape[1] * shape[2], tf.float32)
    guided = features * masks[..., None]  # (R, H, W, N): batch 1 broadcasts over regions
    flat = tf.reshape(guided, [tf.shape(masks)[0], -1, shape[-1]])
    area = tf.reduce_mean(tf.square(masks), axis=[1, 2])[:, None, None]
    grams = tf.matmul(flat, flat, transpose_a=True) / tf.maximum(area, 1e-12)
    per_region = tf.reduce_sum(tf.square((grams - target_grams) / (2.0 * n * m)), axis=[1, 2])
    return tf.reduce_sum(weights * per_region)
