"""Colour preservation (Gatys, Bethge, Hertzmann & Shechtman 2016, *Preserving Color in Neural
Artistic Style Transfer*): luminance-only transfer and colour histogram matching.

Images are float32 (H, W, 3) RGB arrays in 0..255.
"""

import numpy as np

# NTSC YIQ. Y is the same luma as YCbCr's, and R−Y, B−Y depend on I and Q alone, so keeping
# the content's I and Q keeps its Cb and Cr too.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=np.float64,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float64) @ _RGB_TO_YIQ.T).astype(np.float32)


def yiq_to_rgb(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float64) @ _YIQ_TO_RGB.T).astype(np.float32)


def luminance_image(image: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """The image's luminance as a grey RGB image; with `like`, its mean and standard deviation
    matched to `like`'s luminance (the paper's luminance histogram matching)."""
    y = rgb_to_yiq(image)[..., 0]
    if like is not None:
        target = rgb_to_yiq(like)[..., 0]
        y = (y - y.mean()) * (target.std() / max(float(y.std()), 1e-6)) + target.mean()
    return np.repeat(y[..., None], 3, axis=-1).astype(np.float32)


def with_chroma_of(luminance: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """`luminance`'s Y (of a grey or any RGB image) with `colours`' I and Q."""
    yiq = rgb_to_yiq(colours)
    yiq[..., 0] = rgb_to_yiq(luminance)[..., 0]
    return yiq_to_rgb(yiq)


def match_colors(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`source` moved by an affine colour map so its pixels' mean and covariance equal
    `target`'s: x' = A (x − μ_s) + μ_t with A = Σ_t^½ Σ_s^−½ (symmetric square roots)."""
    src = source.reshape(-1, 3).astype(np.float64)
    tgt = target.reshape(-1, 3).astype(np.float64)
    mu_s, mu_t = src.mean(0), tgt.mean(0)
    a = _sqrtm(np.cov(tgt, rowvar=False)) @ _sqrtm(np.cov(src, rowvar=False), inverse=True)
    matched = (src - mu_s) @ a.T + mu_t
    return matched.reshape(source.shape).astype(np.float32)


def _sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 1e-6)  # a flat channel would make Σ^−½ blow up
    power = -0.5 if inverse else 0.5
    return (vectors * values**power) @ vectors.T


def prepare(mode: str, content: np.ndarray, *styles: np.ndarray) -> tuple[np.ndarray, list]:
    """The content and style images the optimisation sees under colour mode `mode`."""
    if mode == "luminance":
        return luminance_image(content), [luminance_image(s, like=content) for s in styles]
    if mode == "histogram":
        return content, [match_colors(s, content) for s in styles]
    return content, list(styles)


def present(mode: str, image: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The optimised image as the user sees it: under `luminance`, with the content's colours."""
    return with_chroma_of(image, content) if mode == "luminance" else image
