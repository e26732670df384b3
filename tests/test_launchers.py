"""Sweeps under Hydra's launcher and sweeper plugins (the joblib, slurm, ray and optuna extras),
run as users do. Each test skips when its plugin is not installed."""

import contextlib
import csv
import json
import os
import signal
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.helpers import figure_size, pixels, run_nst, start_nst, wait_for_rows

# Last, so that its sizes win over +search=optimizer's.
TINY = ["+debug=tiny"]


def plugin(module: str, extra: str, why: str = "") -> None:
    pytest.importorskip(f"hydra_plugins.{module}", reason=f"the {extra} extra is not installed: "
                        f"pip install 'nst-tf[{extra}]'{why}")


def read_table(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep.csv", newline="") as file:
        return list(csv.DictReader(file))


def assert_sweep_ended_well(result, sweep: Path, jobs: int) -> list[dict[str, str]]:
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_table(sweep)
    assert [row["status"] for row in rows] == ["ok"] * jobs
    assert figure_size(sweep / "figure.png")
    return rows


def test_joblib_runs_two_jobs_at_once_and_sets_their_tensorflow_threads(tmp_path, monkeypatch):
    plugin("hydra_joblib_launcher", "joblib")
    import joblib

    # joblib's own rule, as in a user's shell: each worker gets cores // n_jobs threads.
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    sweep = tmp_path / "sweep"
    process = start_nst("-m", "hydra/launcher=nst_joblib", "alpha=1e-3,1e-2", *TINY,
                        f"hydra.sweep.dir={sweep}")
    pools = _tensorflow_pools_below(process)
    result = subprocess.CompletedProcess(process.args, process.returncode,
                                         *process.communicate(timeout=60))
    rows = assert_sweep_ended_well(result, sweep, 2)
    assert [row["overrides"].split()[0] for row in rows] == ["alpha=0.001", "alpha=0.01"]
    # Each job in a worker process of its own, TensorFlow's inter-op pool sized by the config's
    # env_set (its default is one thread per core).
    assert list(pools.values()) == [max(joblib.cpu_count() // 2, 1)] * 2, pools
    (start0, end0), (start1, end1) = (_logged_interval(sweep / job / "app.log") for job in "01")
    assert max(start0, start1) < min(end0, end1), "the two jobs did not run at once"


def _tensorflow_pools_below(process) -> dict[int, int]:
    """Until `process` ends: each descendant process that ran TensorFlow, and its inter-op pool's
    size (its threads named tf_Compute)."""
    pools: dict[int, int] = {}
    while process.poll() is None:
        parents = {}
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                parents[int(stat_file.parent.name)] = int(
                    stat_file.read_text().rsplit(")", 1)[1].split()[1])
        below, found = set(), {process.pid}
        while found:
            below |= found
            found = {pid for pid, parent in parents.items() if parent in found} - below
        for pid in below - {process.pid}:
            with contextlib.suppress(OSError):
                names = [(task / "comm").read_text().strip()
                         for task in Path(f"/proc/{pid}/task").iterdir()]
                if "tf_Compute" in names:
                    pools[pid] = max(pools.get(pid, 0), names.count("tf_Compute"))
        time.sleep(0.1)
    return pools


def _logged_interval(log: Path) -> tuple[datetime, datetime]:
    """The times of a job's first and last lines in its app.log."""
    lines = log.read_text().splitlines()
    return tuple(datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                 for line in (lines[0], lines[-1]))


def test_submitit_local_sweep_writes_the_table_and_figure(tmp_path):
    plugin("hydra_submitit_launcher", "slurm")
    sweep = tmp_path / "sweep"
    result = run_nst("-m", "hydra/launcher=submitit_local", "alpha=1e-3,1e-2", *TINY,
                     f"hydra.sweep.dir={sweep}")
    assert_sweep_ended_well(result, sweep, 2)
    # Each job ran in a process of its own: submitit's local job ids are their processes' ids.
    # (Beside them submitit keeps a "%j" folder: its file name template.)
    jobs = [path.name for path in (sweep / ".submitit").iterdir() if path.name.isdigit()]
    assert len(jobs) == 2 and jobs[0] != jobs[1], jobs


def test_usr1_to_a_submitit_job_saves_it_despite_submitits_own_handlers(tmp_path):
    # Inside a job submitit ignores SIGTERM and requeues on USR2; during the run ours apply,
    # so the USR1 that nst_submitit_slurm asks Slurm for ends the run with a clean save.
    plugin("hydra_submitit_launcher", "slurm")
    sweep = tmp_path / "sweep"
    process = start_nst("-m", "hydra/launcher=submitit_local", "seed=0", "+debug=tiny",
                        "optimizer=adam", "iterations=100000", "save_every=5",
                        f"hydra.sweep.dir={sweep}")
    job = None
    try:
        wait_for_rows(sweep / "0" / "losses.csv", 10)
        job = _submitit_job(sweep)
        os.kill(job, signal.SIGUSR1)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        if job and _is_job(Path(f"/proc/{job}"), sweep):  # a job outlives its launcher
            with contextlib.suppress(ProcessLookupError):
                os.kill(job, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGUSR1, stderr[-3000:]
    row, = read_table(sweep)
    assert row["status"] == "interrupted" and "SIGUSR1" in row["reason"]
    done = json.loads((sweep / "0" / "summary.json").read_text())["final"]["iteration"]
    assert np.array_equal(pixels(sweep / "0" / "result.png"),
                          pixels(sweep / "0" / "snapshots" / f"iter_{done:05d}.png"))


def _submitit_job(sweep: Path) -> int:
    """The pid of the process submitit started for the sweep's job."""
    for _ in range(50):
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and _is_job(proc, sweep):
                return int(proc.name)
        time.sleep(0.2)
    raise AssertionError("no submitit job process found")


def _is_job(proc: Path, sweep: Path) -> bool:
    try:
        args = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"submitit.core._submit" in args and any(str(sweep).encode() in a for a in args)


def test_slurm_defaults_ask_for_usr1_before_the_time_limit(tmp_path, monkeypatch):
    # No Slurm here: a stand-in sbatch keeps the script submitit wrote, then refuses it.
    plugin("hydra_submitit_launcher", "slurm")
    bin_dir, script = tmp_path / "bin", tmp_path / "job.sh"
    bin_dir.mkdir()
    for name, body in (("sbatch", f'cp "$1" {script}\necho "sbatch: no Slurm" >&2\nexit 1'),
                       ("srun", "exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = run_nst("-m", "hydra/launcher=nst_submitit_slurm", "hydra.launcher.signal_delay_s=300",
                     "alpha=1e-3,1e-2", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode != 0 and "sbatch: no Slurm" in result.stderr
    lines = script.read_text().splitlines()
    for flag in ("--signal=USR1@300", "--cpus-per-task=4", "--mem=8GB", "--time=60",
                 "--array=0-1%2"):
        assert f"#SBATCH {flag}" in lines
    assert "export TF_NUM_INTRAOP_THREADS=$SLURM_CPUS_PER_TASK" in script.read_text()


def test_ray_sweep_writes_the_table_and_figure(tmp_path):
    plugin("hydra_ray_launcher", "ray", "; the dev extra leaves it out, so `make test` never "
           "tests the Ray launcher (README.md says so)")
    sweep = tmp_path / "sweep"
    result = run_nst("-m", "hydra/launcher=nst_ray", "hydra.launcher.ray.remote.num_cpus=1",
                     "alpha=1e-3,1e-2", *TINY, f"hydra.sweep.dir={sweep}")
    assert_sweep_ended_well(result, sweep, 2)


def test_optuna_search_tries_each_optimisers_own_setting(tmp_path):
    plugin("hydra_optuna_sweeper", "optuna")
    from nst_tf.sweep import sweep_grid

    sweep = tmp_path / "search"
    result = run_nst("-m", "+search=optimizer", "hydra.sweeper.n_trials=3", *TINY,
                     f"hydra.sweep.dir={sweep}")
    rows = assert_sweep_ended_well(result, sweep, 3)
    for row in rows:  # L-BFGS trials set a history size, Adam trials a learning rate
        tried = dict(item.split("=", 1) for item in row["overrides"].split()[:2])
        setting = {"lbfgs": "optimizer.history_size", "adam": "optimizer.learning_rate"}
        assert list(tried) == ["optimizer", setting[tried["optimizer"]]]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(float(row["total"]) for row in rows)
    assert best.best_params.optimizer in ("lbfgs", "adam")
    grid = sweep_grid(sweep)  # trials, not a grid of 3 swept keys
    assert len(grid.cells) == 1 and [t.splitlines()[0].split(" · ")[0] for t in grid.titles[0]] \
        == ["trial 0", "trial 1", "trial 2"]


def test_failed_trials_count_as_the_worst_loss_and_the_search_goes_on(tmp_path):
    # Optuna 2 would end the search with an error on the nan a failed run returns.
    plugin("hydra_optuna_sweeper", "optuna")
    sweep = tmp_path / "search"
    result = run_nst("-m", "+search=optimizer", "hydra.sweeper.n_trials=2", "alpha=-1", *TINY,
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert [row["status"] for row in read_table(sweep)] == ["failed", "failed"]
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value == float("inf")


def test_optuna_trials_asked_for_together_run_as_one_batch(tmp_path):
    plugin("hydra_optuna_sweeper", "optuna")
    sweep = tmp_path / "search"
    result = run_nst("-m", "hydra/sweeper=optuna", "hydra/launcher=nst_batched",
                     "hydra.launcher.batch_size=2",
                     "alpha=interval(0.0001, 0.01)",
                     "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", *TINY,
                     f"hydra.sweep.dir={sweep}")
    rows = assert_sweep_ended_well(result, sweep, 4)
    batches = [json.loads((sweep / row["job"] / "summary.json").read_text())["stages"][0]["batch"]
               for row in rows]
    assert batches == [2, 2, 2, 2]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == min(float(row["total"]) for row in rows)
