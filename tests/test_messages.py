"""What a newcomer sees: our help page, one line for a launcher that is not installed or a
cluster that is not there, and none of TensorFlow's retracing warnings."""

import importlib.util
import logging

import pytest
from hydra.errors import MissingConfigException

from nst_tf.hydra_setup import PLUGIN_EXTRAS, config_error_message, presets
from tests.helpers import compose_config, run_nst, run_script


def test_help_is_ours_with_the_presets_and_no_internal_groups():
    result = run_nst("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for way in ("nst-tf style=", "nst-tf -m ", "nst_tf.stylize("):
        assert way in text, way
    for group in ("content", "style", "optimizer", "experiment", "search", "hydra/launcher"):
        (listed,) = [line for line in text.splitlines() if line.startswith(f"{group}: ")]
        assert set(presets(group)) <= set(listed.removeprefix(f"{group}: ").split("  ")[0]
                                          .split(", ")), listed
    assert "fig2" in presets("experiment") and "outputs/multirun/" in text
    for internal in ("schema", "common", "panel/", "Powered by Hydra"):
        assert internal not in text, internal


def test_loss_table_help_says_what_it_prints():
    result = run_script("loss_table.py", "--help")
    assert result.returncode == 0, result.stderr
    assert "Markdown table on stdout" in result.stdout and "--json" in result.stdout


@pytest.mark.parametrize("config", list(PLUGIN_EXTRAS))
def test_a_plugin_that_is_not_installed_names_its_extra(config):
    error = MissingConfigException("Could not load", missing_cfg_file=config, options=None)
    extra = PLUGIN_EXTRAS[config]
    message = config_error_message(error)
    assert f"pip install 'nst-tf[{extra}]'" in message and "choose one of" not in message


@pytest.mark.parametrize(("override", "example"), [("video=true", "video.enabled=true"),
                                                   ("model=3", "model.backbone=...")])
def test_a_value_given_to_a_group_of_settings_names_one_of_its_keys(override, example):
    with pytest.raises(Exception) as error:
        compose_config(override)
    message = config_error_message(error.value)
    assert "is a group of settings" in message and example in message, message


def test_ray_launcher_without_ray_is_one_line(tmp_path):
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher"):
        pytest.skip("the ray extra is installed here")
    result = run_nst("-m", "hydra/launcher=nst_ray", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "nst-tf: error: the ray launcher is a Hydra plugin that is not installed; install the "
        "ray extra: pip install 'nst-tf[ray]' (in a checkout: pip install -e '.[ray]')")


def test_slurm_launcher_without_slurm_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the slurm extra is not installed: pip install 'nst-tf[slurm]'")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    sweep = tmp_path / "sweep"
    result = run_nst("-m", "hydra/launcher=nst_submitit_slurm", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "nst-tf: error: Slurm was not found (no sbatch or srun on this machine); "
        "hydra/launcher=submitit_local runs the same sweep here")
    assert not sweep.exists()


def test_tensorflow_retracing_warnings_are_dropped(caplog):
    import tensorflow as tf

    import nst_tf._tensorflow as quiet

    def trace_anew() -> None:  # six new functions of one code: TensorFlow's warning case
        for _ in range(6):
            tf.function(lambda x: x + 1)(tf.constant(1.0))

    logger = logging.getLogger("tensorflow")
    (ours,) = [f for f in logger.filters if isinstance(f, quiet._DropRetracingWarnings)]
    logger.removeFilter(ours)  # TensorFlow still words it as the filter expects
    try:
        trace_anew()
    finally:
        logger.addFilter(ours)
    assert "triggered tf.function retracing" in caplog.text
    caplog.clear()
    trace_anew()
    logger.warning("other warnings still pass")
    assert "retracing" not in caplog.text and "other warnings still pass" in caplog.text



# --- what a run says as it goes --------------------------------------------------------------


def test_a_long_run_says_how_long_it_will_take(caplog):
    from nst_tf.callbacks import TimeEstimate
    from nst_tf.transfer import Progress

    def steps(estimate: TimeEstimate, seconds: list[float]) -> None:
        for iteration, at in enumerate(seconds):
            estimate.on_step(Progress(iteration, at, {"total": 1.0}), None)

    with caplog.at_level("INFO", logger="nst_tf"):
        steps(TimeEstimate(500), [5.0, 7.0, 9.0, 11.0, 13.0])  # 2 s/it after the first
        steps(TimeEstimate(10), [0.1, 0.2, 0.3, 0.4, 0.5])  # a second in all: nothing to say
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["about 17 min to go at 2 s/it on this machine (500 iterations)"]  # 496 left


def test_the_progress_bar_is_labelled_and_ends_on_the_final_losses(capsys):
    from pathlib import Path

    from nst_tf.callbacks import ProgressBar
    from nst_tf.jobs import Job, Where
    from nst_tf.transfer import Progress

    where = Where(Path("outputs/x"), "hydra.run.dir", "nst-tf")
    job = Job(lambda: None, where, ["size=64"])
    job.summary.update(config={"size": 64}, content={"path": "/images/tubingen.jpg"},
                       styles=[{"path": "/images/starry_night.jpg"}])
    assert job.label == "tubingen + starry_night 64px"
    sweep_job = Job(lambda: None, Where(Path("0"), "hydra.sweep.dir", "nst-tf", keep_failures=True),
                    ["alpha=1e-3", "seed=1"])
    assert sweep_job.label == "alpha=1e-3 seed=1"
    bar = ProgressBar(2, job.label)
    bar.on_step(Progress(0, 0.1, {"total": 9.0}), None)
    bar.on_step(Progress(1, 0.2, {"total": 5.0}), None)
    bar.on_end(Progress(2, 0.3, {"total": 4.0}), None, "ok")
    shown = capsys.readouterr().err.strip().split("\r")[-1]
    assert shown.startswith("tubingen + starry_night 64px") and "total=4" in shown
