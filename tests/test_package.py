"""The package as users install it: a wheel carrying the configs, its command, and no TensorFlow
before a run starts."""

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from PIL import Image

from tests.helpers import ROOT

SOURCES = ["pyproject.toml", "README.md", "nst_tf", "conf", "hydra_plugins"]  # what the wheel reads


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env or os.environ.copy(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the sources (no build/ left in the checkout)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (backend,) = map(Requirement, pyproject["build-system"]["requires"])
    try:
        version = metadata.version(backend.name)
    except metadata.PackageNotFoundError:
        version = "0"
    if not backend.specifier.contains(version):
        pytest.skip(f"{backend} (a dev dependency) is not installed here: run `make setup`")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(out), str(source)], cwd=out)
    (built,) = out.glob("nst_tf-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed into an empty target dir."""
    target = tmp_path_factory.mktemp("target")
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
          "--target", str(target), str(wheel)], cwd=target)
    return target


def _installed_env(target: Path) -> dict[str, str]:
    # Run with `python -S`: no .pth files, so the dev install (an editable finder) cannot stand
    # in for the wheel; this venv's site-packages provide only the dependencies.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *site.getsitepackages()])}


def test_wheel_holds_the_code_the_configs_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {f"nst_tf/{p.relative_to(ROOT / 'nst_tf').as_posix()}"
            for p in (ROOT / "nst_tf").rglob("*.py")}
    configs = {f"nst_tf/conf/{p.relative_to(ROOT / 'conf').as_posix()}"
               for p in (ROOT / "conf").rglob("*") if p.suffix in (".py", ".yaml")}
    assert "nst_tf/conf/style/starry.yaml" in configs
    plugin = {"hydra_plugins/nst_tf_launcher/batched.py"}
    assert not (code | configs | plugin) - names, "missing from the wheel (pyproject's packages?)"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "nst-tf = nst_tf.app:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_composes_its_own_config(installed, tmp_path):
    env = _installed_env(installed)
    code = "from nst_tf.config import CONF_DIR; print(CONF_DIR)"
    where = _run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()) == installed / "nst_tf" / "conf"
    job = _run([sys.executable, "-S", "-m", "nst_tf", "--cfg", "job", "style=scream"],
               cwd=tmp_path, env=env)
    assert "name: tubingen" in job.stdout and "name: scream" in job.stdout


def test_installed_command_lists_the_presets(installed, tmp_path):
    command = installed / "bin" / "nst-tf"  # the console script pip wrote from the entry point
    result = _run([sys.executable, "-S", str(command), "--help"], cwd=tmp_path,
                  env=_installed_env(installed))
    (listed,) = [line for line in result.stdout.splitlines() if line.startswith("style: ")]
    presets = {p.stem for p in (ROOT / "conf" / "style").glob("*.yaml")}
    assert presets and presets <= set(listed.removeprefix("style: ").split(", "))


def test_installed_wheel_runs(installed, tmp_path, images_dir):
    # One sweep of two jobs: Hydra finds the batching launcher in the installed hydra_plugins/,
    # and a preset named in `styles` is read from the installed configs' folder (CONF_DIR).
    # batch_size=2: the two jobs run as one batch, which only the batching launcher does.
    sweep = tmp_path / "sweep"
    _run([sys.executable, "-S", "-m", "nst_tf", "-m", "hydra/launcher=nst_batched",
          "hydra.launcher.batch_size=2", "+debug=tiny", "styles=[{preset: starry}]",
          "alpha=1e-3,1e-2", f"hydra.sweep.dir={sweep}"],
         cwd=tmp_path, env=_installed_env(installed))
    summaries = [json.loads((sweep / job / "summary.json").read_text()) for job in ("0", "1")]
    assert [(s["status"], s["config"]["alpha"]) for s in summaries] == [("ok", 1e-3), ("ok", 1e-2)]
    assert [s["stages"][0]["batch"] for s in summaries] == [2, 2]
    assert [Path(s["styles"][0]["path"]).name for s in summaries] == ["starry_night.jpg"] * 2
    assert all(Image.open(sweep / job / "result.png").size == (32, 24) for job in ("0", "1"))


@pytest.mark.parametrize("args", [[], ["--help"], ["--cfg", "job"]], ids=["import", "help", "cfg"])
def test_no_tensorflow_before_a_run(args, tmp_path):
    # Checked at exit, since --help ends in sys.exit(0).
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('tensorflow loaded:', 'tensorflow' in sys.modules))\n"
            "import nst_tf\n")
    if args:
        code += f"from nst_tf.app import main\nsys.argv[1:] = {args!r}\nmain()\n"
    result = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.stdout.rstrip().endswith("tensorflow loaded: False")


def test_python_m_runs_the_command(tmp_path):
    result = _run([sys.executable, "-m", "nst_tf", "--cfg", "job", "alpha=0.5"], cwd=tmp_path)
    assert "alpha: 0.5" in result.stdout
