"""Coarse to fine: scales=[a,b] optimises at each size, starting from the previous result,
scale_iterations=[m,n] times at each."""

import json

import numpy as np
from PIL import Image

from nst_tf.images import read_rgb, to_array
from tests.helpers import FAST, read_csv, run_nst


def small(path, size) -> np.ndarray:
    return to_array(read_rgb(path).resize(size, Image.Resampling.LANCZOS)).ravel()


def test_two_scales_end_to_end(tmp_path, images_dir):
    out = tmp_path / "c2f"
    result = run_nst("scales=[32,64]", "scale_iterations=[10,15]", "save_every=10", *FAST,
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "result.png").size == (64, 48)
    assert Image.open(out / "scale_00032.png").size == (32, 24)
    rows = read_csv(out / "losses.csv")
    assert [int(r["size"]) for r in rows] == [32] * 11 + [64] * 16
    assert [r["iteration"] for r in rows] == list(range(11)) + list(range(10, 26))
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert [s["content_size"] for s in stages] == [[32, 24], [64, 48]]

    # The fine result keeps the coarse one's layout: closer to it than a run from noise is.
    plain = tmp_path / "plain"
    assert run_nst("size=64", "iterations=15", "seed=1", *FAST,
                   f"hydra.run.dir={plain}").returncode == 0
    coarse = small(out / "scale_00032.png", (32, 24))
    fine = small(out / "result.png", (32, 24))
    other = small(plain / "result.png", (32, 24))
    assert np.corrcoef(coarse, fine)[0, 1] > np.corrcoef(coarse, other)[0, 1] + 0.1
