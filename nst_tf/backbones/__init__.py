"""Backbones: each declares its layers, pooling and preprocessing, and builds itself from its
weights. Nothing else in the package knows a network's shape.

Adding one: a `Backbone` (see vgg.py), with its memory `Footprint`, registered in BACKBONES
below (or by a plug-in, nst_tf.plugins); `model.backbone=NAME` then selects it
(docs/ARCHITECTURE.md).
"""

from nst_tf.backbones.vgg import VGG16, VGG19, Backbone, Footprint, ImagenetFile

BACKBONES: dict[str, Backbone] = {backbone.name: backbone for backbone in (VGG19, VGG16)}
DEFAULT_BACKBONE = VGG19.name  # the paper's network

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "Footprint", "ImagenetFile",
           "get_backbone"]


def get_backbone(name: str) -> Backbone:
    """The registered backbone `name`; KeyError names the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"no backbone '{name}'; known: {', '.join(BACKBONES)}") from None
