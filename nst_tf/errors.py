"""Users' mistakes and faults they can fix: their exception types, and how they are reported."""

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn


class UserError(Exception):
    """A mistake the user can fix: the message is one line naming the problem and the fix."""


class WriteError(UserError):
    """A file could not be written; whoever knows which setting places it words the fix."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot write {path} ({reason})")


def say(line: str, level: int = logging.WARNING) -> None:
    """One line for the user on stderr, also kept in the run's log file (Hydra's job log) when
    there is one; not sent to the log's console handler, which would show it twice. The file
    first, and a stderr that cannot be written (a closed terminal: EIO) is let be: neither may
    cost the other, nor change how the run ends."""
    record = logging.getLogger("nst_tf").makeRecord("nst_tf", level, "", 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    try:
        print(f"nst-tf: {line}", file=sys.stderr, flush=True)
    except OSError:
        pass


def warn(message: str) -> None:
    say(f"warning: {message}")


def fail(message: str, code: int = 2) -> NoReturn:
    """Report a user's mistake in one line and exit (code 2 unless told; no traceback)."""
    say(f"error: {message}", logging.ERROR)
    sys.exit(code)


# Slurm can be told to send SIGUSR1 before a time limit; schedulers stop jobs with SIGTERM; a
# closed terminal or ssh session sends SIGHUP.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGHUP")
                     if hasattr(signal, name))


class Stopped(BaseException):
    """A stop signal (Ctrl-C, SIGTERM, SIGUSR1, SIGHUP). A BaseException, as KeyboardInterrupt
    is: library code's `except Exception` (TensorFlow's AutoGraph, a reader's clean-up) must not
    take a stop for a failure and go on. `progress`: where the run was saved, if it was."""

    def __init__(self, signum: int, progress: Any = None) -> None:
        self.signum, self.progress = signum, progress
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class StopRequest:
    """A request to stop, which the loop checks between steps (calling it gives the signal, if
    any). A driver's signal handlers make one (`handling_signals`); a program that embeds
    nst_tf may call `request` itself, from any thread: its own handlers stay as they are.

    Outside `noted()` a signal raises Stopped where the program is (nothing is saved yet);
    within, it is only noted, for the loop to save and end, or a save to complete."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._noting = 0

    def __call__(self) -> int | None:
        return self.signals[0] if self.signals else None

    def request(self, signum: int = signal.SIGINT) -> None:
        self.signals.append(signum)

    @contextmanager
    def noted(self) -> Iterator[None]:
        self._noting += 1
        try:
            yield
        finally:
            self._noting -= 1

    def on_signal(self, signum: int, _: Any) -> None:
        if not self._noting:
            raise Stopped(signum)
        self.signals.append(signum)


_HANDLING: list[StopRequest] = []  # the drivers' stop requests whose handlers are installed


@contextmanager
def handling_signals(stop: StopRequest) -> Iterator[StopRequest]:
    """For drivers only: within, the stop signals go to `stop` (in the main thread, the only one
    signals reach); the handlers before are put back after."""
    main = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, stop.on_signal)
                for signum in (STOP_SIGNALS if main else ())}
    _HANDLING.append(stop)
    try:
        yield stop
    finally:
        _HANDLING.remove(stop)
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def driver_stop() -> Iterator[StopRequest]:
    """The stop request the driver's handlers feed (a launcher runs its jobs inside the app's
    handlers); where no driver installed any, as in a launcher's worker process, handlers for
    the time being."""
    if _HANDLING:
        yield _HANDLING[-1]
        return
    with handling_signals(StopRequest()) as stop:
        yield stop


PAUSE_AT = "NST_TF_PAUSE_AT"  # tests: the moment to wait for a signal at


def pause_point(moment: str, until: Callable[[], bool] = lambda: False) -> None:
    """Tests send stop signals at exact moments: with NST_TF_PAUSE_AT=`moment`, say so on stderr
    and wait (up to a minute) for a signal: one that raises ends the wait, one only noted ends
    it once `until()` holds. Nothing otherwise."""
    if os.environ.get(PAUSE_AT) != moment:
        return
    print(f"nst-tf: paused at {moment}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not until():
        time.sleep(0.02)
