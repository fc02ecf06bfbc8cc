"""
The access log as the seed operators kept it: every error (up to a per-minute cap, so
an attack cannot fill the disk), and a sample of successes. One JSON object per line,
emitted through twisted.logger on a publisher of its own (never mixed into twistd's
log), and written off the reactor thread in batches.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from typing import IO

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, LogPublisher
from twisted.python.threadpool import ThreadPool

FIELDS = "access"


class Sampler:
    """Decides before anything is formatted, so a sampled-out hit costs one comparison."""

    def __init__(self, clock: IReactorTime, success_rate: float, errors_per_minute: int, draw: Callable[[], float] = random.random):
        self._clock = clock
        self._success_rate = success_rate
        self._errors_per_minute = errors_per_minute
        self._draw = draw
        self._minute = -1
        self._errors = 0
        self.dropped_errors = 0

    def keep(self, status: int) -> bool:
        if status < 400:
            return self._success_rate >= 1.0 or self._draw() < self._success_rate
        minute = int(self._clock.seconds() // 60)
        if minute != self._minute:
            self._minute, self._errors = minute, 0
        if self._errors >= self._errors_per_minute:
            self.dropped_errors += 1
            return False
        self._errors += 1
        return True


class AccessLog(Service):
    """
    The caller asks `sampler.keep(status)` first and builds the fields for `emit` only
    then. Lines are flushed every `interval` seconds by one writer thread.
    """

    def __init__(self, sampler: Sampler, out: IO[str], reactor: IReactorFromThreads, clock: IReactorTime, interval: float = 1.0):
        self.sampler = sampler
        self._out = out
        self._reactor = reactor
        self._pending: list[str] = []
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="edgeproxy-access-log")
        self._flusher = LoopingCall(self.flush)
        self._flusher.clock = clock
        self._interval = interval
        publisher = LogPublisher(self._observe)
        self._logger = Logger(namespace="edgeproxy.access", observer=publisher)

    def emit(self, fields: dict) -> None:
        self._logger.info("{access}", access=fields)

    def _observe(self, event: dict) -> None:
        self._pending.append(json.dumps(event[FIELDS], separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = "".join(self._pending), []
            deferToThreadPool(self._reactor, self._pool, self._write, lines)

    def _write(self, lines: str) -> None:
        self._out.write(lines)
        self._out.flush()

    def startService(self) -> None:
        super().startService()
        self._pool.start()
        self._flusher.start(self._interval, now=False)

    def stopService(self) -> None:
        """The last lines are written before the process ends."""
        super().stopService()
        self._flusher.stop()
        lines, self._pending = "".join(self._pending), []
        self._pool.stop()
        if lines:
            self._write(lines)


def open_access_log(target: str) -> IO[str]:
    """
    `-` is the process's real standard output (for journald), not twistd's sys.stdout,
    which turns every write into a log event; anything else a file appended to.
    """
    if target == "-":
        return os.fdopen(os.dup(sys.__stdout__.fileno()), "a", encoding="utf-8", buffering=1 << 16)
    return open(target, "a", encoding="utf-8", buffering=1 << 16)
