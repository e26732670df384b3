"""What one process builds once and reuses across runs (a sweep's jobs, API calls, batches):
weights, the precision choice, feature extractors and the compiled step."""

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from nst_tf import batching, probes
from nst_tf import precision as precision_probe
from nst_tf.config import Precision, RunConfig, StyleLossKind, record
from nst_tf.errors import pause_point, warn
from nst_tf.model import FeatureExtractor
from nst_tf.normalize import normalized_weights
from nst_tf.objective import loss_terms, loss_weights, optimizer_params
from nst_tf.transfer import StyleTransfer
from nst_tf.weights import VGGWeights, load_weights

log = logging.getLogger("nst_tf")


class Session:
    """The caches and builders of one process."""

    def __init__(self) -> None:
        self._weights: dict[str, VGGWeights] = {}
        self._extractors: dict[tuple, FeatureExtractor] = {}
        self._transfer: dict[tuple, StyleTransfer] = {}

    def weights(self, settings: RunConfig, cache_dir: Path) -> VGGWeights:
        """The configured backbone's weights, normalised if asked."""
        model = settings.model
        spec = f"{model.backbone} {model.weights}"
        if spec not in self._weights:
            self._weights[spec] = load_weights(model.weights, cache_dir, model.backbone)
        if not model.normalize:
            return self._weights[spec]
        key = f"{spec} normalised {model.pooling.value} {model.calibration}"
        if key not in self._weights:
            self._weights[key] = normalized_weights(
                self._weights[spec], model.pooling.value, model.calibration, cache_dir
            )
        return self._weights[key]

    def precision(self, settings: RunConfig, weights: VGGWeights, cache_dir: Path
                  ) -> tuple[RunConfig, dict[str, Any]]:
        """The settings with precision=auto replaced by the faster precision here, and a record
        of the choice; an explicit bf16 that is slower here gets one warning line."""
        requested = settings.precision.value
        if requested == "fp32":
            return settings, {"requested": requested, "used": requested}

        def probe(precision: str) -> float:
            trial = dataclasses.replace(settings, precision=Precision(precision))
            size = precision_probe.PROBE_SIZE
            [seconds] = probes.step_seconds([self.build(trial, weights, (size, size))],
                                            loss_weights(settings))
            return seconds

        choice = precision_probe.choose(probe, cache_dir)
        used = choice.used if requested == "auto" else requested
        speedup = choice.bf16_speedup
        ratio = "" if speedup is None else f"; bf16 step {speedup:.2f}x as fast as fp32 here"
        log.info("precision=%s: using %s (%s, %s%s)", requested, used, choice.device,
                 choice.source, ratio)
        if requested == "bf16" and speedup is not None and speedup < 1:
            warn(f"precision=bf16 is {1 / speedup:.1f}x slower than fp32 on this machine "
                 f"({choice.device}); precision=auto or fp32 is faster")
        return dataclasses.replace(settings, precision=Precision(used)), {
            "requested": requested, "used": used, "bf16_speedup": speedup,
            "device": choice.device, "decided": choice.source}

    def batch_size(self, settings: RunConfig, weights: VGGWeights, shape: tuple[int, int],
                   cap: int, steps: float, cache_dir: Path) -> batching.BatchChoice:
        """batch_size=auto for jobs that share the step of `settings` at `shape`: at most
        `cap` at once (besides one more for the probe), `steps` their steps at one image per
        step. The probe builds the steps the jobs would run (without masks); the one-image step
        is kept, for the jobs if no batch pays, and the batch's step if it won when timed last
        (the jobs run it where they come in batches of that size)."""
        built: dict[int, StyleTransfer] = {}

        def first() -> batching.Timing:
            one, _ = self.transfer(settings, weights, shape)  # kept: the jobs' if none pays
            built[1] = one
            return batching.Timing(one.first_step_seconds, one.compile_seconds,
                                   one.first_step_seconds)

        def measure(batch: int) -> batching.Timing:
            if batch == 1:
                [seconds] = probes.step_seconds([built[1]], loss_weights(settings))
                return batching.Timing(seconds, built[1].compile_seconds, seconds)
            for older in [size for size in built if size > 1]:  # one batch's step at a time
                del built[older]
            built[batch] = self.build(settings, weights, shape, batch=batch)  # beside it
            alone, seconds = probes.step_seconds([built[1], built[batch]],
                                                 loss_weights(settings))
            return batching.Timing(seconds, built[batch].compile_seconds, alone)

        model = settings.model
        facts = {"shape": list(shape), "precision": settings.precision.value,
                 "backbone": model.backbone, "pooling": model.pooling.value,
                 "optimizer": settings.optimizer.name,
                 "style_loss": settings.style_loss.name.value, "terms": sorted(settings.terms),
                 "jit_compile": settings.jit_compile, "winograd": model.winograd}
        choice = batching.choose(first, measure, cap, steps, cache_dir, facts)
        if choice.batch > 1 and choice.batch in built:  # built for the probe: not again
            self._keep(self._key(settings, weights, 0, shape, choice.batch, None),
                       built[choice.batch])
        log.info(choice.line())
        return choice

    def extractor(self, settings: RunConfig, weights: VGGWeights) -> FeatureExtractor:
        """The backbone with the configured pooling and precision, cut after the deepest layer
        the losses use."""
        if settings.precision == Precision.auto:
            raise ValueError("precision=auto is a choice to make first: see Session.precision")
        layers = tuple(dict.fromkeys(name for term in loss_terms(settings) for name in term.layers))
        key = (weights.backbone, weights.digest, settings.model.pooling.value,
               settings.precision.value, layers, settings.model.winograd)
        if key not in self._extractors:
            self._extractors[key] = FeatureExtractor(
                weights.arrays, settings.model.pooling.value, layers, settings.precision.value,
                weights.backbone, settings.model.winograd)
        return self._extractors[key]

    def build(self, settings: RunConfig, weights: VGGWeights, shape: tuple[int, int],
              regions: int = 0, batch: int = 1, tile: int | None = None) -> StyleTransfer:
        """A new compiled step for these settings, image shape and batch (traced, run once),
        computed in tiles of `tile` px if given."""
        pause_point("compile")
        return StyleTransfer(self.extractor(settings, weights), loss_terms(settings, regions),
                             shape, settings.optimizer.name, optimizer_params(settings),
                             jit_compile=settings.jit_compile, batch=batch, tile=tile)

    @staticmethod
    def step_key(settings: RunConfig, weights: VGGWeights, regions: int = 0) -> tuple:
        """What runs must share to share a compiled step, besides the image shape, the batch
        and the layers (a batch's step reads the union of its runs' layers)."""
        return (weights.backbone, weights.digest, settings.model.pooling.value,
                settings.model.winograd, settings.precision.value, tuple(settings.terms),
                settings.loss_scale,
                settings.optimizer.name, tuple(sorted(optimizer_params(settings).items())),
                settings.jit_compile, regions,
                settings.video.enabled, settings.video.long_term,  # the temporal term, its frames
                repr(record(settings.style_loss)),
                # the sliced Wasserstein term draws its directions from the run's seed
                settings.seed if settings.style_loss.name == StyleLossKind.sliced_wasserstein
                else None)

    def transfer(self, settings: RunConfig, weights: VGGWeights, shape: tuple[int, int],
                 regions: int = 0, batch: int = 1, tile: int | None = None
                 ) -> tuple[StyleTransfer, bool]:
        """The compiled step for these settings, image shape, batch and tiles, and whether it
        was reused."""
        key = self._key(settings, weights, regions, shape, batch, tile)
        if key in self._transfer:
            log.info("reusing the compiled step")
            return self._transfer[key], True
        started = time.perf_counter()
        self._keep(key, self.build(settings, weights, shape, regions, batch, tile))
        log.info("built the model and compiled the step%s in %.1f s",
                 f" for {batch} images" if batch > 1 else "", time.perf_counter() - started)
        return self._transfer[key], False

    def _key(self, settings: RunConfig, weights: VGGWeights, regions: int,
             shape: tuple[int, int], batch: int, tile: int | None) -> tuple:
        return (*self.step_key(settings, weights, regions), tuple(settings.content_layers),
                tuple(settings.style_layers), shape, batch, tile)

    def _keep(self, key: tuple, transfer: StyleTransfer) -> None:
        self._transfer.clear()  # one compiled step at a time: each holds image-sized state
        self._transfer[key] = transfer


SESSION = Session()  # the process's own
