"""A sweep's end: records.py reads each job's record and writes sweep.csv (overrides.py reads
its overrides), layout.py arranges the jobs for a figure and labels them, drawing.py draws it.
Reads only files, so it imports neither TensorFlow nor Hydra; matplotlib loads only when a
figure is drawn."""

from typing import TYPE_CHECKING, Any

from nst_tf.sweep.layout import cell_caption, cell_note, compact_layers, format_value, sweep_grid
from nst_tf.sweep.records import (
    NO_RECORD,
    TABLE_COLUMNS,
    SweepJob,
    read_sweep,
    sweep_exit_code,
    sweep_tally,
    write_sweep_table,
)

if TYPE_CHECKING:
    from nst_tf.sweep.drawing import write_sweep_figure

__all__ = [
    "NO_RECORD",
    "TABLE_COLUMNS",
    "SweepJob",
    "cell_caption",
    "cell_note",
    "compact_layers",
    "format_value",
    "read_sweep",
    "sweep_exit_code",
    "sweep_grid",
    "sweep_tally",
    "write_sweep_figure",
    "write_sweep_table",
]


def __getattr__(name: str) -> Any:
    # Only the figure needs matplotlib; a reader of the records never pays for it.
    if name == "write_sweep_figure":
        from nst_tf.sweep.drawing import write_sweep_figure

        return write_sweep_figure
    raise AttributeError(f"module 'nst_tf.sweep' has no attribute {name!r}")
