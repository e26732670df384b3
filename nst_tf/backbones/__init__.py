"""Backbones: each declares its layers, pooling and preprocessing, and builds itself from its
weights. Nothing else in the package knows a network's shape.

Adding one: a `Backbone` (see vgg.py), registered in BACKBONES below; `model.backbone=NAME`
then selects it (docs/ARCHITECTURE.md).
"""

from nst_tf.backbones.vgg import VGG16, VGG19, Backbone, ImagenetFile

BACKBONES: dict[str, Backbone] = {backbone.name: backbone for backbone in (VGG19, VGG16)}
DEFAULT_BACKBONE = VGG19.name  # the paper's network

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "ImagenetFile", "get_backbone"]


def get_backbone(name: str) -> Backbone:
    """The registered backbone `name`; KeyError names the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"no backbone '{name}'; known: {', '.join(BACKBONES)}") from None
