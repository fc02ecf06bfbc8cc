"""Sampling keeps every error up to the cap and a share of successes; lines are JSON, written off the reactor."""

import json
import threading

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from edgeproxy.accesslog import AccessLog, Sampler


def test_every_error_is_kept_up_to_the_cap_per_minute():
    clock = Clock()
    sampler = Sampler(clock, success_rate=0.0, errors_per_minute=5)
    assert [sampler.keep(502) for _ in range(8)] == [True] * 5 + [False] * 3
    assert sampler.dropped_errors == 3
    clock.advance(60)
    assert sampler.keep(404) is True


def test_successes_are_sampled_at_the_rate():
    draws = iter([0.005, 0.5, 0.009, 0.011, 0.0])
    sampler = Sampler(Clock(), success_rate=0.01, errors_per_minute=5, draw=lambda: next(draws))
    assert [sampler.keep(200) for _ in range(5)] == [True, False, True, False, True]
    assert Sampler(Clock(), 0.0, 1).keep(304) is False
    assert Sampler(Clock(), 1.0, 1, draw=lambda: 1 / 0).keep(200) is True  # no draw at a rate of 1


@pytest_twisted.ensureDeferred
async def test_lines_are_json_and_written_by_another_thread(tmp_path):
    path = tmp_path / "access.log"
    writers = []

    class Out:
        def __init__(self):
            self.file = open(path, "w")

        def write(self, text):
            writers.append(threading.current_thread().name)
            self.file.write(text)

        def flush(self):
            self.file.flush()

    log = AccessLog(Sampler(Clock(), 1.0, 10), Out(), reactor, reactor, interval=0.05)
    log.startService()
    try:
        for status in (200, 404, 502):
            log.emit({"status": status, "path": "/x.jpg"})
        await deferLater(reactor, 0.2, lambda: None)
    finally:
        log.stopService()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["status"] for line in lines] == [200, 404, 502]
    assert writers and threading.main_thread().name not in writers
