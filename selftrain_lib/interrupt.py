"""Ctrl-C and SIGTERM in the command-line entry points: one line, not a traceback.

An interrupted run resumes from its last checkpoint when the same command runs again
(:func:`selftrain_lib.stage.run_stage`), so an interruption is not an error to debug: the entry
points print one line saying so (naming the run folder when known) and exit with the shell's
status for the signal, 130 (SIGINT) or 143 (SIGTERM).

SIGTERM is turned into :class:`Terminated`, a ``KeyboardInterrupt``: the library treats both alike
(no error file, the checkpoint stays), where before SIGTERM ended the process without a word.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

EXIT_SIGINT = 128 + signal.SIGINT    # 130, as a shell reports a process ended by Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, a batch scheduler's time limit, torchrun stopping its workers)."""


@dataclass
class Interruption:
    """What an entry point knows for the one line: the run folders it is working through (the first
    without ``metrics.json`` is the one that was training), or a folder to name; and, once
    interrupted, the exit status."""

    run_dirs: list[Path] = field(default_factory=list)
    where: str | None = None
    exit_status: int = 0
    resumable: bool = True   # False where nothing is checkpointed (bench, pretrain): a rerun starts over

    def message(self, terminated: bool) -> str:
        what = "terminated (SIGTERM)" if terminated else "interrupted (Ctrl-C)"
        if not self.resumable:
            return f"{what}: nothing was kept; run the same command again to start over"
        current = next((d for d in self.run_dirs if not (d / "metrics.json").is_file()), None)
        if current is not None:
            where = f" of {current}"
        elif self.where:
            where = f" ({self.where})"
        else:
            where = ""
        return f"{what}: run the same command again to resume from the last checkpoint{where}"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def handle_signals() -> Iterator[Interruption]:
    """Within the block, SIGTERM raises :class:`Terminated`; on leaving by Ctrl-C or SIGTERM the
    one line is printed on stderr and ``state.exit_status`` is set (130 or 143), the exception
    swallowed: the caller returns ``state.exit_status``."""
    state = Interruption()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        yield state
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        # the progress bar's line may be unfinished: start a fresh one
        print(f"\n{state.message(terminated)}", file=sys.stderr)
        state.exit_status = EXIT_SIGTERM if terminated else EXIT_SIGINT
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
