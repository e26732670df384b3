"""Several styles blended by weight."""

import json

import pytest

from tests.helpers import run_nst


def test_two_styles_weighted_one_and_zero_equal_the_single_style(tmp_path, images_dir):
    single, blended = tmp_path / "single", tmp_path / "blended"
    common = ["+debug=tiny", "size=48", "iterations=8"]
    assert run_nst(*common, f"hydra.run.dir={single}").returncode == 0
    result = run_nst(*common, "styles=[{preset: starry, weight: 1}, {preset: scream, weight: 0}]",
                     f"hydra.run.dir={blended}")
    assert result.returncode == 0, result.stderr
    assert (blended / "result.png").read_bytes() == (single / "result.png").read_bytes()
    summary = json.loads((blended / "summary.json").read_text())
    assert [s["weight"] for s in summary["styles"]] == [1.0, 0.0]


def test_blend_differs_from_either_style(tmp_path, images_dir):
    finals = {}
    for name, styles in {
        "starry": "[{preset: starry}]",
        "scream": "[{preset: scream}]",
        "both": "[{preset: starry, weight: 1}, {preset: scream, weight: 1, scale: 0.5}]",
    }.items():
        out = tmp_path / name
        result = run_nst("+debug=tiny", "size=48", "iterations=3", f"styles={styles}",
                         f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr
        finals[name] = json.loads((out / "summary.json").read_text())["final"]["style"]
    assert len(set(finals.values())) == 3


@pytest.mark.parametrize("styles, expected", [
    ("[{preset: starry, weight: 0}, {preset: scream, weight: 0}]", "sum to 0"),
    ("[{preset: starry, weight: -1}, {preset: scream, weight: 2}]", "negative"),
    ("[{preset: nope}]", "unknown style preset 'nope'"),
    ("[{weight: 1}]", "exactly one of preset or path"),
])
def test_bad_blends_give_one_line(styles, expected, tmp_path):
    result = run_nst("+debug=tiny", "iterations=1", f"styles={styles}",
                     f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
