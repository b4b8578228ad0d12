"""A small progress bar for long work (training epochs, sampling, benchmarks), written to stderr.

    for batch in progress(batches, desc="epoch 1"):
        ...
        bar.set(loss=0.31)  # optional: extra fields shown after the bar

On a terminal the bar redraws in place; elsewhere (CI logs) it prints one line when done.
"""
from __future__ import annotations

import sys
import time


class progress:
    def __init__(self, iterable=None, total=None, desc="", width=28, stream=None):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.width = desc, width
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.n, self.fields, self.start, self._last = 0, {}, time.perf_counter(), 0.0
        self._drawn = 0  # length of the line on the terminal now

    def set(self, **fields):
        self.fields.update(fields)

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if self.live and (now - self._last > 0.1 or self.n == self.total):
            self._last = now
            self.stream.write(self._redraw())
            self.stream.flush()

    def _line(self):
        elapsed = time.perf_counter() - self.start
        fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        if self.total:
            done = int(self.width * self.n / self.total)
            bar = "#" * done + "-" * (self.width - done)
            return f"{self.desc} [{bar}] {self.n}/{self.total} {elapsed:.1f}s {fields}".rstrip()
        return f"{self.desc} {self.n} {elapsed:.1f}s {fields}".rstrip()

    def _redraw(self):
        # The line over the one drawn before, padded to its length: a carriage return only moves the cursor, so
        # a shorter line would leave the old one's last characters (loss=2.316 where the value is now 2).
        line = self._line()
        text, self._drawn = "\r" + line.ljust(self._drawn), len(line)
        return text

    def close(self):
        self.stream.write((self._redraw() if self.live else self._line()) + "\n")
        self.stream.flush()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
