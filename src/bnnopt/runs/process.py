"""How a bnnopt process ends: termination signals and a closed standard output.

**Signals.** :func:`stop_on_signals` makes SIGTERM (what a cluster scheduler, ``kill``
or ``timeout`` sends) behave as SIGINT (Ctrl-C): the signal raises
:class:`Terminated` in the main thread, a subclass of :class:`KeyboardInterrupt`,
so every ``finally`` block runs (run-directory locks are released, temporary files
removed) and code that handles an interrupt handles both. ``Terminated.signum``
keeps the signal number, so the exit status can be the shell's ``128 + signum``
(130 for SIGINT, 143 for SIGTERM). Only the first signal is raised; later ones
arrive while the first is being handled and are ignored, so the clean-up itself
is never interrupted.

**Closed stdout.** :func:`tolerate_closed_stdout` lets a process keep running when
the reader of its standard output goes away (``bnnopt list | head -1``): the first
write that fails with ``BrokenPipeError`` points file descriptor 1 at
``os.devnull`` and every later write, including the interpreter's final flush,
is silently dropped. Python ignores SIGPIPE, so without this the failed write
raises in the middle of whatever the process was doing.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Iterable

__all__ = ["Terminated", "stop_on_signals", "exit_status", "tolerate_closed_stdout"]


class Terminated(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGINT, SIGHUP) arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


def exit_status(interrupt: BaseException) -> int:
    """``128 + signum`` for a :class:`Terminated`, 130 (SIGINT) for a plain KeyboardInterrupt."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def stop_on_signals(signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
                    on_signal: Callable[[int], None] | None = None) -> bool:
    """Raise :class:`Terminated` in the main thread on the first of ``signums``.

    ``on_signal(signum)`` runs first (e.g. to forward the signal to child processes);
    it is called for every arrival, also the ignored later ones. Returns False (and
    installs nothing) when called outside the main thread, where Python cannot
    install signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    fired = []

    def handler(signum, frame):  # noqa: ARG001
        if on_signal is not None:
            on_signal(signum)
        if fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    for signum in signums:
        signal.signal(signum, handler)
    return True


class _DevNullOnBrokenPipe:
    """A text stream wrapper: a write or flush that finds the pipe closed points fd 1 at
    /dev/null and drops the data from then on."""

    def __init__(self, stream):
        self._stream = stream
        self.closed_pipe = False

    def _divert(self) -> None:
        self.closed_pipe = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if self.closed_pipe:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._divert()
            return len(text)

    def flush(self) -> None:
        if self.closed_pipe:
            try:  # the buffer still holds what the pipe refused: it goes to /dev/null now
                self._stream.flush()
            except (OSError, ValueError):
                pass
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._divert()
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def tolerate_closed_stdout() -> None:
    """Wrap ``sys.stdout`` so that a closed reader ends output quietly (module docstring).

    Idempotent; a no-op when stdout has no file descriptor (e.g. captured by a test).
    """
    stream = sys.stdout
    if stream is None or isinstance(stream, _DevNullOnBrokenPipe):
        return
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    sys.stdout = _DevNullOnBrokenPipe(stream)
