"""Progress bars for saves and loads that take more than about a second, and size formatting.

The store does its work in one call, so the bar is driven from outside it:

- a save is given a :class:`CountingState`, a read-only mapping that the store
  reads value by value while encoding, so each read marks the previous value
  as encoded and the bar advances by that value's (estimated) size; writing to
  the database is the last step;
- a load cannot be followed from outside the store, so its bar says what is
  being loaded, how large it is, and for how long it has been running.

A timer thread opens the bar (``tqdm.auto``: a widget in Jupyter, text
elsewhere) only once the work has run for ``delay`` seconds, so quick
operations print nothing extra; the bar is removed when the work ends.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any


class Progress:
    """A byte-counting bar that appears only if the work is still running after ``delay`` seconds."""

    def __init__(self, description: str, total: int | None, delay: float = 1.0):
        self.description = description
        self.total = total if total and total > 0 else None
        self.delay = delay
        self.done = 0
        self.shown = False
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.delay <= 0:
            self._open()
        else:
            ctx = contextvars.copy_context()  # output from the thread goes to this cell
            self._thread = threading.Thread(target=ctx.run, args=(self._watch,), daemon=True,
                                             name="statekit-progress")
            self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                if et is None and self.total is not None:
                    self._bar.update(max(0, self.total - self._bar.n))
                self._bar.close()
                self._bar = None

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)

    def _watch(self) -> None:
        if self._stop.wait(self.delay):
            return
        self._open()
        while not self._stop.wait(0.25):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()

    def _open(self) -> None:
        from tqdm.auto import tqdm

        with self._lock:
            if self._bar is not None or self._stop.is_set():
                return
            if self.total is None:  # nothing to count: say what runs, and for how long
                self._bar = tqdm(total=None, desc=self.description, bar_format="{desc}: {elapsed}", leave=False)
            else:
                self._bar = tqdm(total=self.total, initial=min(self.done, self.total), desc=self.description,
                                 unit="B", unit_scale=True, leave=False)
            self.shown = True


class CountingState(Mapping[str, Any]):
    """The values to save, reporting to ``progress`` as the store reads them one by one."""

    def __init__(self, values: dict[str, Any], sizes: dict[str, int], progress: Progress):
        self._values = values
        self._sizes = sizes
        self._progress = progress
        self._counted: set[str] = set()
        self._last: str | None = None

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        self._finish_last()
        self._last = name
        return value

    def _finish_last(self) -> None:
        if self._last is not None and self._last not in self._counted:
            self._counted.add(self._last)
            self._progress.advance(self._sizes.get(self._last, 0))

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)
