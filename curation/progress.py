"""Progress for long stages: a bar on a terminal, plain lines in logs.

``progress(total, "embedding")`` returns a callable ``update(n)``-style object usable as a
context manager. On a TTY it draws a tqdm bar on stderr; otherwise it prints a line such as
``embedding: 5000/55719 (9%) 412.3/s`` at most every ``every`` seconds and once at the end, so
CI logs and Prefect logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, desc: str, *, unit: str = "items", every: float = 5.0,
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self.last = time.monotonic()
        use_bar = self.stream.isatty() if bar is None else bar
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True)
        else:
            self._line()

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self.last >= self.every:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        rate = self.done / max(now - self.start, 1e-9)
        done = f"{self.done}/{self.total} ({self.done / self.total:.0%})" if self.total else f"{self.done}"
        print(f"{self.desc}: {done} {self.unit}, {rate:.1f}/s", file=self.stream, flush=True)
        self.last = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int, desc: str, **kw) -> Progress:
    return Progress(total, desc, **kw)
