"""precision=auto: the faster precision from a probe of the real step, cached per machine."""

import json

import pytest

from nst_tf import precision
from nst_tf.compose import validate
from nst_tf.config import CONF_DIR
from nst_tf.hydra_setup import register_configs
from nst_tf.session import SESSION


def settings(*overrides: str):
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return validate(compose("config", overrides=["size=32", *overrides]))


class Probe:
    """Step times per precision, counting calls."""

    def __init__(self, fp32: float, bf16: float) -> None:
        self.times, self.calls = {"fp32": fp32, "bf16": bf16}, []

    def __call__(self, name: str) -> float:
        self.calls.append(name)
        return self.times[name]


@pytest.mark.parametrize("fp32, bf16, used", [
    (10.2, 87.5, "fp32"),  # Zen 3: bf16 ~9x slower
    (0.98, 0.54, "bf16"),  # avx512_bf16: ~1.8x faster
    (1.0, 0.95, "fp32"),  # within the margin: not worth bf16's rounding
])
def test_auto_picks_the_faster_and_caches_it(tmp_path, fp32, bf16, used):
    probe = Probe(fp32, bf16)
    choice = precision.choose(probe, tmp_path)
    assert (choice.used, choice.source) == (used, "probed")
    assert choice.bf16_speedup == pytest.approx(fp32 / bf16)
    again = precision.choose(Probe(1.0, 1.0), tmp_path)  # cached: the probe is not asked
    assert (again.used, again.source, again.bf16_speedup) == (used, "cached", choice.bf16_speedup)
    (entry,) = (tmp_path / "precision").iterdir()
    recorded = json.loads(entry.read_text())
    assert recorded["machine"] == precision.machine() and recorded["used"] == used
    entry.write_text("{damaged")
    assert precision.choose(probe, tmp_path).source == "probed"
    assert probe.calls == ["fp32", "bf16"] * 2


def test_the_probe_times_the_real_step(vgg_weights, tmp_path, monkeypatch):
    # The pipeline's own probe, end to end, on this machine: the run's step is built at the
    # probe's size in each precision and timed, and the record is what those times say.
    from nst_tf import probes

    timed, real = [], probes.step_seconds

    def seen(transfers, weights):
        seconds = real(transfers, weights)
        timed.extend((t.shape, t.extractor.model.layers[-1].compute_dtype, s)
                     for t, s in zip(transfers, seconds, strict=True))
        return seconds

    monkeypatch.setattr(probes, "step_seconds", seen)
    chosen, record = SESSION.precision(settings(), vgg_weights, tmp_path)
    side = precision.PROBE_SIZE
    assert [(shape, dtype) for shape, dtype, _ in timed] == [((side, side), "float32"),
                                                             ((side, side), "bfloat16")]
    speedup = timed[0][2] / timed[1][2]
    assert record["bf16_speedup"] == pytest.approx(speedup)
    assert record["used"] == ("bf16" if speedup >= precision.MARGIN else "fp32")
    assert chosen.precision.value == record["used"]
    assert record["requested"] == "auto" and record["decided"] == "probed"
    kept, again = SESSION.precision(settings(), vgg_weights, tmp_path)
    assert again["decided"] == "cached" and again["used"] == record["used"] and len(timed) == 2


def test_explicit_bf16_slower_here_gets_one_warning(vgg_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(precision, "choose",
                        lambda probe, cache: precision.Choice("fp32", 0.117, "CPU Zen 3", "cached"))
    chosen, record = SESSION.precision(settings("precision=bf16"), vgg_weights, tmp_path)
    assert chosen.precision.value == "bf16" and record["used"] == "bf16"
    assert capsys.readouterr().err.splitlines() == [
        "nst-tf: warning: precision=bf16 is 8.5x slower than fp32 on this machine (CPU Zen 3); "
        "precision=auto or fp32 is faster"]
    SESSION.precision(settings("precision=fp32"), vgg_weights, tmp_path)
    assert capsys.readouterr().err == ""
