"""Hit ratio, summary and progress display: no network."""

import io

from twisted.internet.task import Clock

from edgeproxy.warminput import InputCounts
from edgeproxy.warmreport import Progress, Tally, progress_line, summary


def tally_of(*answers, errors=()):
    tally = Tally()
    for status, x_cache in answers:
        tally.answered(status, x_cache, 10)
    for reason in errors:
        tally.failed(reason)
    return tally


def test_hits_are_x_cache_hit_of_any_tier_over_all_answers():
    tally = tally_of((200, "HIT-MEMORY"), (200, "HIT-DISK"), (200, "RENDERED"), (200, "MISS"), (404, None), errors=["timeout"])
    assert (tally.hits, tally.responses, tally.sent, tally.hit_ratio) == (2, 5, 6, 0.4)
    assert not tally.ok
    assert tally_of((404, None)).ok
    assert not tally_of((503, None)).ok


def test_summary_says_n_a_without_answers_and_names_error_reasons():
    text = summary(InputCounts(lines=3, targets=2), tally_of(errors=["connection refused"] * 2), 0.5, None)
    assert "replay: 2 requests in 0.5 s (4.0 req/s): 2xx 0, 3xx 0, 4xx 0, 5xx 0, errors 2 (connection refused 2)" in text
    assert "hit ratio during replay: n/a (no answers)" in text
    assert "verify" not in text


def test_progress_line_with_and_without_a_total():
    tally = tally_of((200, "HIT-MEMORY"), (200, "MISS"))
    assert progress_line(tally, 50, None, 2.0) == "50 lines, 2 requests, 1.0 req/s, hits 50.0 %, errors 0"
    assert progress_line(tally, 50, 200, 2.0, width=8) == "[##......]  25% 50/200 lines, 2 requests, 1.0 req/s, hits 50.0 %, errors 0"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_bar_redrawn_in_place_and_a_log_a_line_every_interval():
    clock, terminal, log = Clock(), Terminal(), io.StringIO()
    tally = tally_of((200, "HIT-DISK"))
    for stream in (terminal, log):
        progress = Progress(stream, clock, interval=5.0)
        progress.start(tally, lambda: 1, 4, "lines")
        clock.advance(5.0)
        progress.stop()
    assert terminal.getvalue().startswith("\r\x1b[K[#######") and terminal.getvalue().endswith("\n")
    assert log.getvalue().startswith("edgeproxy-warm: 1/4 lines, 1 requests") and log.getvalue().count("\n") == 1


def test_quiet_shows_nothing():
    clock, terminal = Clock(), Terminal()
    progress = Progress(terminal, clock, quiet=True)
    progress.start(Tally(), lambda: 0, None, "lines")
    clock.advance(60)
    progress.stop()
    assert terminal.getvalue() == ""
