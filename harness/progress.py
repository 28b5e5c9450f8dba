"""Serving progress: a tqdm bar on a terminal; elsewhere (a log file, CI, a cluster job) a plain
line every few seconds, so a log holds a few readable lines instead of carriage-return frames."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """No output; the interface `serve()` drives."""

    def update(self, num_done: int, num_running: int, num_waiting: int, step: int) -> None:
        """The state after a step (cheap when nothing is shown)."""

    def close(self) -> None:
        """The end of serving (normal or not)."""


class BarProgress(Progress):
    """tqdm's bar, for a terminal."""

    def __init__(self, total: int, stream: TextIO) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="req", file=stream, dynamic_ncols=True)
        self.num_done = 0

    def update(self, num_done: int, num_running: int, num_waiting: int, step: int) -> None:
        if num_done != self.num_done:
            self.bar.update(num_done - self.num_done)
            self.num_done = num_done
            self.bar.set_postfix(step=step, run=num_running, wait=num_waiting)

    def close(self) -> None:
        self.bar.close()


class LogProgress(Progress):
    """A line when serving starts, every `interval_s` while it runs, and at the end."""

    def __init__(self, total: int, stream: TextIO, interval_s: float = 5.0) -> None:
        self.total, self.stream, self.interval_s = total, stream, interval_s
        self.t0 = time.monotonic()
        self.next_s = self.t0 + interval_s
        self.state = (0, 0, 0, 0)
        self._write(f"serving {total} requests (progress every {interval_s:g} s)")

    def update(self, num_done: int, num_running: int, num_waiting: int, step: int) -> None:
        self.state = (num_done, num_running, num_waiting, step)
        now = time.monotonic()
        if now >= self.next_s:
            self.next_s = now + self.interval_s
            self._write(self._line(now))

    def close(self) -> None:
        self._write(self._line(time.monotonic()))

    def _line(self, now: float) -> str:
        num_done, num_running, num_waiting, step = self.state
        elapsed = now - self.t0
        rate = num_done / elapsed if elapsed > 0 else 0.0
        return (
            f"progress: {num_done}/{self.total} requests done, {rate:.2f} req/s, "
            f"{num_running} running, {num_waiting} waiting, step {step}, {elapsed:.1f} s elapsed"
        )

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def make_progress(
    total: int, enabled: bool = True, stream: TextIO | None = None, interval_s: float = 5.0
) -> Progress:
    """The progress display for `total` requests: a bar on a terminal, log lines elsewhere."""
    stream = stream or sys.stderr
    if not enabled:
        return Progress()
    if _is_terminal(stream):
        return BarProgress(total, stream)
    return LogProgress(total, stream, interval_s)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
