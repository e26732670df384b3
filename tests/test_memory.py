"""The memory model's numbers (nst_tf.memory), worked out here by hand from what the parts
declare: VGG19's 80,097,536 B of weights and 2300 B per pixel of step, a 160 px tile margin;
L-BFGS's 2 * history image-sized buffers, Adam's 2, each 12 B per pixel; 0.85e9 B before any
image with VGG19; 650 B per pixel of a tiled image (docs/PERFORMANCE.md, docs/TILING.md)."""

import math

import pytest

from nst_tf.backbones.vgg import Footprint
from nst_tf.errors import UserError
from nst_tf.memory import (
    GIB,
    Parts,
    check_memory,
    estimate_peak,
    largest_batch,
    plan_tiling,
    tiled_peak,
)

LBFGS_50 = 100 * 12 + 2300  # B per pixel with VGG19: the histories and the step


def test_the_parts_are_asked_once_by_name():
    parts = Parts.of("lbfgs", 50, "vgg19", 1e6)
    assert (parts.buffers, parts.history, parts.term_bytes) == (100, 50, 1e6)
    assert parts.base == 850_000_000 and parts.state_per_pixel == 1200
    assert Parts.of("adam").buffers == 2 and Parts.of("adam").term_bytes == 0


def test_the_whole_image_estimates():
    pixels = 1024 * 768
    assert estimate_peak(pixels, pixels, Parts.of("lbfgs", 50)) == 850_000_000 + pixels * LBFGS_50
    # 3 images and a style larger than all three (its forward pass outgrows their steps), with
    # 1 MB of the terms' state each
    pixels, style = 512 * 384, 1_000_000
    assert estimate_peak(pixels, style, Parts.of("adam", term_bytes=1e6), 3) == (
        850_000_000 + 3 * (1e6 + pixels * (24 + 2300)) + (style - 3 * pixels) * 2300)


def test_the_tiled_estimate():
    pixels, crop = 4096 * 3072, (1024 + 160) ** 2
    assert tiled_peak((4096, 3072), 1024, Parts.of("lbfgs", 20)) == (
        850_000_000 + pixels * (40 * 12 + 650) + crop * 2300)


def test_a_backbone_of_its_own_counts_its_footprint():
    parts = Parts(Footprint(weight_bytes=1e9, step_bytes_per_pixel=3000, tile_margin=100),
                  buffers=4, history=0, term_bytes=5e7)
    base = 850_000_000 - 80_097_536 + 1e9
    # the crop (256 + 100 px a side) is the whole 300x200 image
    assert tiled_peak((300, 200), 256, parts, 2) == (
        base + 2 * (60_000 * (48 + 650) + 60_000 * 3000 + 5e7))
    assert estimate_peak(60_000, 0, parts, 2) == base + 2 * (5e7 + 60_000 * (48 + 3000))


def test_the_largest_batch_and_the_sizes_proposed():
    pixels = 1024 * 768
    lbfgs = Parts.of("lbfgs", 50)
    available = 850_000_000 + 5 * pixels * LBFGS_50
    assert largest_batch(pixels, pixels, lbfgs, 16, available) == 5
    assert largest_batch(pixels, pixels, lbfgs, 16, available - 1) == 4
    # the terms' 1.2 GB taken as growing with the pixels: 100 B per pixel of 4000x3000
    fits = math.floor(4000 * math.sqrt((20 * GIB - 850_000_000) / (LBFGS_50 + 100) / 12e6))
    with pytest.raises(UserError, match=f"; use size={fits} or less, or tile=auto"):
        check_memory("size", 4000, (4000, 3000), 12e6, Parts.of("lbfgs", 50, term_bytes=1.2e9),
                     20 * GIB)
    # in tiles of 1024 px: what is left beside one crop's step, over the image's pixels
    room = 8 * GIB - 850_000_000 - (1024 + 160) ** 2 * 2300
    fits = math.floor(4096 * math.sqrt(room / (40 * 12 + 650) / (4096 * 3072)))
    with pytest.raises(UserError, match=f"; use size={fits} or less, or a smaller tile than"):
        plan_tiling("1024", "size", 4096, (4096, 3072), 0, Parts.of("lbfgs", 20), 8 * GIB)
