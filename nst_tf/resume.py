"""Continuing an earlier run (finished or stopped by Ctrl-C) from its last snapshot."""

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nst_tf.config import OPTIMIZER_SCHEMAS
from nst_tf.errors import UserError

# What may change when resuming; everything else is the earlier run's, so the curve continues.
CHANGEABLE = ("iterations", "save_every", "progress", "precision", "jit_compile", "paths.images",
              "paths.cache")
_SNAPSHOT = re.compile(r"iter_(\d+)\.png")


@dataclass(frozen=True)
class Checkpoint:
    """The earlier run's last snapshot and its loss rows before it."""

    run_dir: Path
    image: Path
    iteration: int
    rows: list[dict[str, float]]

    @property
    def seconds(self) -> float:
        return self.rows[-1]["seconds"] if self.rows else 0.0


def load_checkpoint(run_dir: str) -> Checkpoint:
    folder = Path(run_dir).expanduser()
    snapshots = {
        int(match.group(1)): path
        for path in (folder / "snapshots").glob("iter_*.png")
        if (match := _SNAPSHOT.fullmatch(path.name))
    }
    if not snapshots:
        raise UserError(
            f"resume: {folder} has no snapshot (snapshots/iter_NNNNN.png); "
            "give the run dir of a run with save_every > 0 or one stopped by Ctrl-C"
        )
    iteration = max(snapshots)
    rows = []
    if (folder / "losses.csv").exists():
        with open(folder / "losses.csv", newline="") as file:
            rows = [
                {k: int(v) if k == "iteration" else float(v) for k, v in row.items()}
                for row in csv.DictReader(file)
            ]
    return Checkpoint(folder, snapshots[iteration], iteration,
                      [row for row in rows if row["iteration"] < iteration])


def resumed_config(cfg: DictConfig, checkpoint: Checkpoint, overrides: Sequence[str]) -> DictConfig:
    """The earlier run's saved config, with only the CHANGEABLE keys taken from this command."""
    saved = checkpoint.run_dir / ".hydra" / "config.yaml"
    if not saved.exists():
        raise UserError(f"resume: {checkpoint.run_dir} has no .hydra/config.yaml; "
                        "give the run dir of an nst-tf run")
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides} - {"resume"}
    fixed = sorted(key for key in given if key not in CHANGEABLE)
    if fixed:
        raise UserError(
            f"resume continues {checkpoint.run_dir} with its own settings, so {', '.join(fixed)} "
            f"cannot change; only {', '.join(CHANGEABLE)} can"
        )
    earlier = OmegaConf.load(saved)
    for key in given:
        OmegaConf.update(earlier, key, OmegaConf.select(cfg, key), merge=False)
    earlier.resume = cfg.resume
    # Back onto the typed schema, so the result validates like any composed config; the
    # optimiser node takes the schema of the optimiser the earlier run used.
    optimizer = earlier.pop("optimizer")
    merged = OmegaConf.merge(cfg, earlier)
    schema = OPTIMIZER_SCHEMAS[optimizer.name]
    merged.optimizer = OmegaConf.merge(OmegaConf.structured(schema), optimizer)
    return merged
