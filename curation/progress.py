"""Progress for long stages: a bar on a terminal, plain lines in logs.

``progress(total, "embedding")`` returns a callable ``update(n)``-style object usable as a
context manager. It reports a line such as ``embedding: 5000/55719 (9%) texts, 412.3/s`` at
most every ``every`` seconds and once at the end:

- when the ``curation`` logger has handlers (the Prefect flow attaches Prefect's, so the lines
  reach the run's logs in the UI), as an INFO record of ``curation.progress``;
- otherwise on a TTY as a tqdm bar on stderr, else as a plain line on stderr (CI logs).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("curation.progress")


class Progress:
    def __init__(self, total: int, desc: str, *, unit: str = "items", every: float = 5.0,
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = self.last = time.monotonic()
        # someone routes the library's logs (the flow, to Prefect): report there, not on a bar
        self._log = bool(logging.getLogger("curation").handlers) and bar is None
        use_bar = not self._log and (self.stream.isatty() if bar is None else bar)
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
        line = f"{self.desc}: {done} {self.unit}, {rate:.1f}/s"
        if self._log:
            log.info(line)
        else:
            print(line, file=self.stream, flush=True)
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
