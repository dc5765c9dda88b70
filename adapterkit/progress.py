"""Progress of long work (training, evaluation, distillation, transfer, multi-task builds).

`progress(title, total)` is a context manager yielding `update(advance=1, loss=None, examples=None)`.
On a terminal it draws a rich bar (cleared when done); otherwise (CI logs, `nohup`, a pipe, a
notebook) it prints a plain line every `every` seconds (default 30, `$ADAPTERKIT_PROGRESS_EVERY`)
and a last line when the work ends, if it printed any:

    epoch 1/3: step 120/268 (45%)  loss 0.5123  212.3 ex/s  elapsed 1m02s  ETA 1m15s

Lines go to stderr, so a command's results on stdout stay clean. `set_enabled(False)` (the
CLI's `--quiet`) silences every reporter of the process.
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

DEFAULT_EVERY = 30.0
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn every progress reporter of this process on or off."""
    global _enabled
    _enabled = enabled


def interval() -> float:
    """Seconds between plain progress lines ($ADAPTERKIT_PROGRESS_EVERY, default 30)."""
    value = os.environ.get("ADAPTERKIT_PROGRESS_EVERY", "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_EVERY
    except ValueError:
        return DEFAULT_EVERY


def duration(seconds: float) -> str:
    """1h02m, 3m05s or 42s."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LineReporter:
    """Plain progress lines: the non-terminal form."""

    def __init__(self, title: str, total: int | None, stream: TextIO, every: float, clock=time.monotonic):
        self.title, self.total, self.stream, self.every, self.clock = title, total, stream, every, clock
        self.start = self.last = clock()
        self.done, self.examples, self.loss, self.printed = 0, 0, None, 0

    def update(self, advance: int = 1, loss: float | None = None, examples: int | None = None) -> None:
        self.done += advance
        self.examples += examples or 0
        if loss is not None:
            self.loss = loss
        now = self.clock()
        if now - self.last >= self.every and (self.total is None or self.done < self.total):
            self.last = now
            self._print(now)

    def close(self) -> None:
        if self.printed:
            self._print(self.clock())

    def line(self, now: float) -> str:
        elapsed = now - self.start
        parts = [f"{self.title}: step {self.done}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if elapsed > 0:
            parts.append(f"{self.examples / elapsed:.1f} ex/s" if self.examples else f"{self.done / elapsed:.2f} steps/s")
        parts.append(f"elapsed {duration(elapsed)}")
        if self.total and self.done:
            left = elapsed / self.done * (self.total - self.done)
            parts.append(f"ETA {duration(left)}" if self.done < self.total else "done")
        return "  ".join(parts)

    def _print(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)
        self.printed += 1


class BarReporter:
    """A rich bar with loss and throughput, cleared when the work ends: the terminal form."""

    def __init__(self, title: str, total: int | None, stream: TextIO):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            transient=True, console=Console(file=stream))
        self.bar.start()
        self.task = self.bar.add_task(title, total=total, info="")
        self.start, self.examples = time.monotonic(), 0

    def update(self, advance: int = 1, loss: float | None = None, examples: int | None = None) -> None:
        self.examples += examples or 0
        info = [f"loss {loss:.4f}"] if loss is not None else []
        if self.examples:
            info.append(f"{self.examples / max(time.monotonic() - self.start, 1e-9):.0f} ex/s")
        self.bar.update(self.task, advance=advance, info="  ".join(info))

    def close(self) -> None:
        self.bar.stop()


@contextmanager
def progress(title: str, total: int | None = None, enabled: bool = True, stream: TextIO | None = None,
             every: float | None = None) -> Iterator[Callable[..., None]]:
    """Report the progress of `total` steps; yields `update(advance=1, loss=None, examples=None)`."""
    if not (enabled and _enabled):
        yield lambda *args, **kwargs: None
        return
    stream = stream or sys.stderr
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    reporter = BarReporter(title, total, stream) if is_tty else \
        LineReporter(title, total, stream, interval() if every is None else every)
    try:
        yield reporter.update
    finally:
        reporter.close()
