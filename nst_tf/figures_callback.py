"""Build a sweep's figure when its last job has finished (registered in conf/experiment/)."""

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nst_tf.report import write_sweep_figure


class SweepFigure(Callback):
    """Writes figure.png and figure.pdf into the sweep dir at the end of a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            paths = write_sweep_figure(sweep_dir)
        except Exception as error:  # a figure must never fail a finished sweep
            message = " ".join(str(error).split()) or type(error).__name__
            print(f"nst-tf: warning: no figure for {sweep_dir}: {message}; "
                  f"retry with: python scripts/make_figure.py {sweep_dir}", file=sys.stderr)
            return
        print(f"figure: {paths[0]} and {paths[1].name}")
