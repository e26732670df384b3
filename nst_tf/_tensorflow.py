"""Importing this imports TensorFlow quietly: entry points import it before anything else
that loads TensorFlow."""

import logging
import os
import re
import sys
import tempfile

# TensorFlow's native start-up logs (oneDNN notice, CUDA probing on CPU-only machines) ignore
# TF_CPP_MIN_LOG_LEVEL in recent releases, so catch stderr while it loads and probes devices,
# and pass on only what is not known noise.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} "  # absl info and warning lines
    r"|E\d{4} .*(cuInit|cuda))"
)


def _import_tensorflow_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not _NOISE.match(line):
                    print(line, file=sys.stderr)


class _DropRetracingWarnings(logging.Filter):
    """TensorFlow warns when a function's code is traced again and again; here that is by design:
    each new image shape, optimiser setting or loss_table pass builds a compiled step of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_import_tensorflow_quietly()
logging.getLogger("tensorflow").addFilter(_DropRetracingWarnings())
