"""
What a replay achieved, in the terms an operator cuts over on: the hit ratio. A hit
is an answer whose X-Cache starts with HIT (memory or disk); RENDERED (a variant made
from a cached original, no origin asked) is counted apart, since it cost a render.
The progress display is a bar on a terminal and a plain line every few seconds in a
log, both on stderr; the summary goes to stdout.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from edgeproxy.warminput import InputCounts, Skip

_STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


@dataclass
class Tally:
    """The answers of one pass, counted as they land."""

    statuses: Counter[str] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    body_bytes: int = 0

    def answered(self, status: int, x_cache: str | None, body_bytes: int) -> None:
        self.statuses[f"{status // 100}xx"] += 1
        self.x_cache[x_cache or "none"] += 1
        self.body_bytes += body_bytes

    def failed(self, reason: str) -> None:
        self.errors[reason] += 1

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def sent(self) -> int:
        return self.responses + sum(self.errors.values())

    @property
    def hits(self) -> int:
        return sum(count for value, count in self.x_cache.items() if value.startswith("HIT"))

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.responses if self.responses else 0.0

    @property
    def ok(self) -> bool:
        """No transport error and no 5xx: what exit status 0 promises."""
        return not self.errors and not self.statuses["5xx"]


def summary(counts: InputCounts, replay: Tally, seconds: float, verify: Tally | None) -> str:
    """The closing report, one fact per line."""
    skipped = counts.skipped
    lines = [
        f"input: {counts.lines} lines, {counts.targets} replayed, {counts.duplicates} duplicates, "
        f"{skipped[Skip.FILTERED]} filtered (method or status), {skipped[Skip.MALFORMED]} malformed, {skipped[Skip.BLANK]} blank or comments",
        f"replay: {replay.sent} requests in {seconds:.1f} s ({replay.sent / seconds if seconds else 0:.1f} req/s): {_statuses(replay)}",
        f"replay X-Cache: {_x_cache(replay)}",
        f"hit ratio during replay: {_hit_ratio(replay, 'answers')}",
    ]
    if verify is not None:
        lines.append(f"verify: {verify.sent} requests: {_statuses(verify)}")
        lines.append(f"verify X-Cache: {_x_cache(verify)}")
        lines.append(f"hit ratio now: {_hit_ratio(verify, 'sampled answers')}")
    return "\n".join(lines) + "\n"


def _statuses(tally: Tally) -> str:
    classes = ", ".join(f"{name} {tally.statuses[name]}" for name in _STATUS_CLASSES)
    errors = ", ".join(f"{reason} {count}" for reason, count in sorted(tally.errors.items()))
    return f"{classes}, errors {sum(tally.errors.values())}{f' ({errors})' if errors else ''}"


def _x_cache(tally: Tally) -> str:
    return ", ".join(f"{value} {count}" for value, count in sorted(tally.x_cache.items())) or "-"


def _hit_ratio(tally: Tally, what: str) -> str:
    if not tally.responses:
        return "n/a (no answers)"
    return f"{_percent(tally.hit_ratio)} ({tally.hits} of {tally.responses} {what} X-Cache HIT-*)"


def _percent(ratio: float) -> str:
    return f"{100 * ratio:.1f} %"


def progress_line(tally: Tally, done: int, total: int | None, seconds: float, unit: str = "lines", width: int = 0) -> str:
    """`done` of `total` `unit`s so far; `width` > 0 draws a bar of that many cells when the total is known."""
    rate = tally.sent / seconds if seconds > 0 else 0.0
    position = f"{done}/{total} {unit}" if total else f"{done} {unit}"
    text = f"{position}, {tally.sent} requests, {rate:.1f} req/s, hits {_percent(tally.hit_ratio)}, errors {sum(tally.errors.values())}"
    if width and total:
        filled = min(width, width * done // total)
        text = f"[{'#' * filled}{'.' * (width - filled)}] {min(100, 100 * done // total):3d}% {text}"
    return text


class Progress:
    """Redraws a bar in place on a terminal (5 a second) or prints a line every `interval` seconds elsewhere."""

    def __init__(self, err: IO[str], clock: IReactorTime, quiet: bool = False, interval: float = 5.0):
        self._err = err
        self._quiet = quiet
        self._tty = err.isatty()
        self._loop = LoopingCall(self.show)
        self._loop.clock = clock
        self._interval = 0.2 if self._tty else interval
        self._pass: tuple[Tally, Callable[[], int], int | None, str] | None = None
        self._started = 0.0

    def start(self, tally: Tally, done: Callable[[], int], total: int | None, unit: str) -> None:
        """Follow one pass: `done()` of `total` `unit`s."""
        self._pass = (tally, done, total, unit)
        self._started = time.monotonic()
        if not self._quiet:
            self._loop.start(self._interval, now=False)

    def stop(self, result: object = None) -> object:
        """Also a Deferred callback: passes `result` on."""
        if self._loop.running:
            self._loop.stop()
            if self._tty:
                self.show()
                self._err.write("\n")
        return result

    def show(self) -> None:
        tally, done, total, unit = self._pass
        line = progress_line(tally, done(), total, time.monotonic() - self._started, unit, 30 if self._tty else 0)
        self._err.write(f"\r\x1b[K{line}" if self._tty else f"edgeproxy-warm: {line}\n")
        self._err.flush()
