"""A run's objective from its settings: the loss terms, their weights, the optimiser's
parameters. The one place settings become the core's objects."""

from dataclasses import asdict
from typing import Any

from nst_tf.config import LossScale, RunConfig, StyleLossKind, VideoConfig
from nst_tf.errors import UserError
from nst_tf.losses import EXTRA_TERMS, LossTerm, TemporalLoss, paper_terms, weights_by_layer
from nst_tf.style_losses import HistogramLoss, MrfLoss, SlicedWassersteinLoss
from nst_tf.transfer import Weights


def loss_weights(settings: RunConfig) -> Weights:
    """α, β, the TV weight, the extra terms' weights and the per-layer weights, by term."""
    # Unless given: the paper weighs its L layers 1/L each; the authors' code, 1 (and 1/N²
    # inside each style layer's loss).
    each = 1.0 if settings.loss_scale == LossScale.reference else None
    style = settings.style_loss
    own = weights_by_layer(style.layers, style.layer_weights)  # the other style terms' layers
    replaced = style.name in (StyleLossKind.mrf, StyleLossKind.sliced_wasserstein)
    paper = Weights.paper(
        alpha=settings.alpha,
        beta=settings.beta * style.weight if replaced else settings.beta,
        tv=settings.tv_weight,
        content_layers=weights_by_layer(settings.content_layers, settings.content_layer_weights,
                                        each),
        style_layers=own if replaced else weights_by_layer(
            settings.style_layers, settings.style_layer_weights, each),
    )
    video = {"temporal": settings.video.temporal_weight * settings.alpha} if (
        settings.video.enabled) else {}
    histogram = style.name == StyleLossKind.histogram
    terms = {**paper.terms, **({"histogram": settings.beta * style.weight} if histogram else {})}
    layers = {**paper.layers, **({"histogram": own} if histogram else {})}
    return Weights({**terms, **video, **settings.terms}, layers)


def loss_terms(settings: RunConfig, regions: int = 0) -> list[LossTerm]:
    """The paper's terms, then the extra ones the config names."""
    unknown = sorted(set(settings.terms) - set(EXTRA_TERMS))
    if unknown:
        known = ", ".join(EXTRA_TERMS) or "none"
        raise UserError(f"terms.{unknown[0]}: no such loss term; registered extra terms: {known}")
    extra = [EXTRA_TERMS[name](settings) for name in settings.terms]
    reference = settings.loss_scale == LossScale.reference
    video = [TemporalLoss(len(frames_back(settings.video)),
                          None if reference else next(iter(settings.content_layers), None))
             ] if settings.video.enabled else []
    content, gram, tv = paper_terms(settings.content_layers, settings.style_layers, regions,
                                    reference)
    return [content, *style_terms(settings, gram), tv, *video, *extra]


def style_terms(settings: RunConfig, gram: LossTerm) -> list[LossTerm]:
    """The style term `style_loss` names, or the Gram term `gram` with it."""
    style = settings.style_loss
    if style.name == StyleLossKind.mrf:
        return [MrfLoss(style.layers, style.patch_size, style.patch_stride)]
    if style.name == StyleLossKind.sliced_wasserstein:
        return [SlicedWassersteinLoss(style.layers, settings.seed)]
    if style.name == StyleLossKind.histogram:
        return [gram, HistogramLoss(style.layers)]
    return [gram]


def frames_back(video: VideoConfig) -> tuple[int, ...]:
    """The earlier frames each frame is tied to, nearest first (Ruder et al.'s J)."""
    return (1, 2, 4) if video.long_term else (1,)


def optimizer_params(settings: RunConfig) -> dict[str, Any]:
    """The optimiser's keyword arguments from its config node (enums as their values)."""
    return {k: getattr(v, "value", v) for k, v in asdict(settings.optimizer).items()
            if k != "name"}
