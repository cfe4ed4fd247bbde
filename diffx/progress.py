"""Progress that shows up where the user looks: a tqdm bar on a terminal, log lines everywhere else.

``dvc repro``, Prefect workers and CI capture stderr into logs, where a tqdm bar is either hidden
(``--no-progress``) or a wall of carriage returns. A long stage must still say how far it is and
when it will end, so every long loop reports through :class:`Progress`: a log line at the first
update, then at a steady rhythm (``DIFFX_PROGRESS_SECONDS``, default 30 s) and at the end, each
with done/total, the caller's numbers (loss, ...), the rate and the ETA. The bar is drawn only when
asked for and stderr is a terminal; then it carries the rhythm and only the closing line is logged,
so log lines never break the bar.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import TracebackType
from typing import Any

from tqdm import tqdm

log = logging.getLogger("diffx.progress")

DEFAULT_SECONDS = 30.0


def _interval() -> float:
    raw = os.environ.get("DIFFX_PROGRESS_SECONDS", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS


def format_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """A counter of ``total`` units of work (``None``: unknown, e.g. a streaming reader; no ETA then).

    ``scale`` lets a training loop count optimizer steps while reporting samples/s (steps x batch size).
    """

    def __init__(
        self,
        desc: str,
        total: int | None,
        *,
        unit: str = "it",
        bar: bool = False,
        scale: int = 1,
        rate_unit: str | None = None,
        start: int = 0,
        interval: float | None = None,
        enabled: bool = True,
    ):
        self.desc, self.total, self.unit, self.scale = desc, total, unit, scale
        self.rate_unit = rate_unit or unit
        self.done = self.start = start
        self.enabled = enabled
        self.interval = _interval() if interval is None else interval
        self.started = time.perf_counter()
        self._last_log: float | None = None
        self._logged_done = -1
        self.postfix: dict[str, Any] = {}
        self.show_bar = enabled and bar and sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total, initial=start, desc=desc, unit=unit, disable=not self.show_bar, mininterval=1.0
        )

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        if postfix:
            self.postfix.update(postfix)
            self.bar.set_postfix({k: _format_value(v) for k, v in postfix.items()}, refresh=False)
        self.bar.update(n)
        now = time.perf_counter()
        if self.enabled and not self.show_bar and (self._last_log is None or now - self._last_log >= self.interval):
            self._log(now)

    def skip(self, n: int) -> None:
        """Work found already done (a resumed run): out of the total, so the rate and the ETA stay honest."""
        if self.total is not None:
            self.total -= n
            self.bar.total = self.total
            self.bar.refresh()

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = now - self.started
        fresh = self.done - self.start
        rate = fresh * self.scale / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            parts = [f"{self.desc}: {self.done} {self.unit}"]
        else:
            percent = 100.0 * self.done / self.total if self.total else 100.0
            parts = [f"{self.desc}: {self.done}/{self.total} {self.unit} ({percent:.0f}%)"]
        parts += [f"{k} {_format_value(v)}" for k, v in self.postfix.items()]
        parts.append(f"{rate:.3g} {self.rate_unit}/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total is not None:
            eta = (self.total - self.done) * elapsed / fresh if fresh > 0 else None
            parts.append("ETA " + (format_duration(eta) if eta is not None else "?"))
        return " | ".join(parts)

    def _log(self, now: float) -> None:
        self._last_log, self._logged_done = now, self.done
        log.info("%s", self.line(now))

    def close(self) -> None:
        self.bar.close()
        if self.enabled and self.done != self._logged_done and (self._last_log is not None or self.show_bar):
            self._log(time.perf_counter())  # the closing line: the final numbers

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
