"""How Hydra meets our configs: the plug-ins loaded and the schemas registered, our launcher
plugin made known, the presets as users pick them (for the help page), a config that does not
compose or type-check said in one line, and the run dir guarded before Hydra writes in it."""

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nst_tf.config import CONF_DIR, ImageConfig, RunConfig, StyleLossConfig
from nst_tf.errors import UserError, fail
from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS
from nst_tf.plugins import load_plugins
from nst_tf.rundir import check_run_dir, check_sweep_dir, claim_dir

# Files in conf/ that other configs include, not options to choose.
_INCLUDED_ONLY = {"experiment": {"common", "common_texture"}}


def presets(group: str) -> list[str]:
    """The options of a config group in conf/ (e.g. "style", "hydra/launcher"), as users pick
    them: without the schemas, which live in Hydra's config store, and the included-only files."""
    hidden = _INCLUDED_ONLY.get(group, set())
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem not in hidden)


# The help page (conf/hydra/help/nst_tf.yaml) lists the presets with ${nst_presets:GROUP}.
# Registered on import, so that every process holding the config (a launcher's workers too) can
# resolve it.
OmegaConf.register_new_resolver("nst_presets", lambda group: ", ".join(presets(group)),
                                replace=True)
# Coarse to fine by halving, as Li & Wand's pyramid: scales=${nst_pyramid:${size},3} is
# [size/4, size/2, size], so a recipe's course follows `size` from the command line.
OmegaConf.register_new_resolver(
    "nst_pyramid", lambda size, levels: [int(size) // 2**k for k in reversed(range(int(levels)))],
    replace=True)


def register_configs() -> None:
    """Load the plug-ins, then make the schemas known to Hydra, so composition type-checks
    every key."""
    load_plugins()
    store = ConfigStore.instance()
    store.store(name="schema", node=RunConfig)
    store.store(group="content", name="schema", node=ImageConfig)
    store.store(group="style", name="schema", node=ImageConfig)
    store.store(group="style_loss", name="schema", node=StyleLossConfig)
    for name, schema in OPTIMIZER_SCHEMAS.items():
        store.store(group="optimizer", name=f"{name}_schema", node=schema)
        if not (CONF_DIR / "optimizer" / f"{name}.yaml").is_file():
            # A plug-in's optimiser, with no preset among ours: optimizer=NAME is its schema.
            store.store(group="optimizer", name=name, node=schema)
    # Hydra finds plugins by listing hydra_plugins/, which an editable install's import hook
    # cannot list: make our launcher known however the package was installed.
    from hydra.core.plugins import Plugins

    from hydra_plugins.nst_tf_launcher.batched import BatchedLauncher

    Plugins.instance().register(BatchedLauncher)


# Hydra's launcher and sweeper plugins: the config each provides, and the extra that installs it.
PLUGIN_EXTRAS = {
    "hydra/launcher/joblib": "joblib",
    "hydra/launcher/submitit_slurm": "slurm",
    "hydra/launcher/submitit_local": "slurm",
    "hydra/launcher/ray": "ray",
    "hydra/sweeper/optuna": "optuna",
}


def _missing_config_message(error: MissingConfigException) -> str:
    name = error.missing_cfg_file or ""
    group, _, option = name.rpartition("/")
    if name in PLUGIN_EXTRAS:  # our nst_* launcher configs extend these
        extra = PLUGIN_EXTRAS[name]
        return (f"the {option} {group.removeprefix('hydra/')} is a Hydra plugin that is not "
                f"installed; install the {extra} extra: pip install 'nst-tf[{extra}]' "
                f"(in a checkout: pip install -e '.[{extra}]')")
    options = [o for o in (error.options or []) if not o.endswith("schema")]
    if group:
        choices = f"; choose one of {', '.join(options)}" if options else ""
        return f"unknown {group} preset '{option}'{choices}"
    return str(error).splitlines()[0]


def config_error_message(error: Exception) -> str:
    """One line for a config that does not compose or type-check."""
    if isinstance(error, MissingConfigException):
        return _missing_config_message(error)
    # The cause (an OmegaConf error) names the key; its first line says what is wrong.
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    key = getattr(cause, "full_key", None)
    first = str(cause).splitlines()[0].strip()
    schema = getattr(cause, "object_type", None)
    if "not in" in first and key and is_dataclass(schema):
        known = ", ".join(sorted(f.name for f in fields(schema)))
        return f"unknown config key '{key}'; known keys: {known}"
    node = _settings_node(schema, key)
    if "Invalid type assigned" in first and node:
        names = [f.name for f in fields(node)]
        example = f"{key}.enabled=true" if "enabled" in names else f"{key}.{names[0]}=..."
        return (f"{key} is a group of settings, not a value: set one of them, e.g. {example} "
                f"(its keys: {', '.join(names)})")
    return f"{key}: {first}" if key else first


def _settings_node(schema: object, key: str | None) -> type | None:
    """The dataclass of `key`'s settings in `schema` (e.g. VideoConfig for 'video'), if any."""
    if not (key and is_dataclass(schema)):
        return None
    kind = next((f.type for f in fields(schema) if f.name == key), None)
    return kind if is_dataclass(kind) else None


class RunDirGuard(Callback):
    """Claims the run or sweep dir and refuses one an earlier run has written, before Hydra
    writes a byte in it (Hydra saves .hydra/ and multirun.yaml before the task starts);
    registered in conf/config.yaml."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir)
        # Refused before it is claimed: a refused dir keeps every byte (a dead run's claim too).
        self._check(lambda: (check_run_dir(folder), claim_dir(folder)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        self._check(lambda: (check_sweep_dir(folder), claim_dir(folder, "hydra.sweep.dir")))

    @staticmethod
    def _check(check: Callable[[], object]) -> None:
        try:
            check()
        except UserError as error:
            fail(str(error))  # Hydra turns a callback's exceptions into warnings; exit instead
