"""The warmer's input, line by line: tables, no reactor."""

import gzip

import pytest

from edgeproxy.warminput import InputCounts, Reservoir, Seen, Skip, Target, count_lines, parse_line, read_targets

HASH = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"
COMBINED = '203.0.113.9 - - [01/Dec/2026:10:00:00 +0000] "{request}" {status} 5120 "-" "Mozilla/5.0"'


@pytest.mark.parametrize(
    "line, expected",
    [
        (f"/{HASH}.jpg", Target(None, f"/{HASH}.jpg")),
        (f"  /{HASH}/thumb.jpg  \n", Target(None, f"/{HASH}/thumb.jpg")),
        (f"http://img0.example.com/{HASH}.jpg?sig=ab&exp=9", Target("img0.example.com", f"/{HASH}.jpg?sig=ab&exp=9")),
        (f"https://img0.example.com:8443/{HASH}.jpg", Target("img0.example.com:8443", f"/{HASH}.jpg")),
        ("/caf\u00e9.jpg", Target(None, "/caf%C3%A9.jpg")),
        ("http://b\u00fccher.example/x.jpg", Target("xn--bcher-kva.example", "/x.jpg")),
        ("http://" + "a" * 70 + ".example/x.jpg", Skip.MALFORMED),
        ("", Skip.BLANK),
        ("   ", Skip.BLANK),
        ("# a comment", Skip.BLANK),
        ("ftp://img0.example.com/x.jpg", Skip.MALFORMED),
        ("http:///x.jpg", Skip.MALFORMED),
        ("/a b.jpg", Skip.MALFORMED),
        ("garbage", Skip.MALFORMED),
    ],
)
def test_list_lines(line, expected):
    assert parse_line(line) == expected
    assert parse_line(line, "list") == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"host": "img0.example.com", "path": "/%s.jpg", "status": 200}' % HASH, Target("img0.example.com", f"/{HASH}.jpg")),
        ('{"host": "localhost", "path": "/%s/480x0.webp?sig=x&exp=1", "status": 304}' % HASH, Target("localhost", f"/{HASH}/480x0.webp?sig=x&exp=1")),
        ('{"host": "localhost", "path": "/%s.jpg", "status": "200"}' % HASH, Target("localhost", f"/{HASH}.jpg")),
        ('{"path": "/%s.jpg"}' % HASH, Target(None, f"/{HASH}.jpg")),
        ('{"host": "", "path": "/%s.jpg"}' % HASH, Target(None, f"/{HASH}.jpg")),
        ('{"host": "localhost", "path": "/%s.jpg", "status": 404}' % HASH, Skip.FILTERED),
        ('{"host": "localhost", "path": "/%s.jpg", "status": 206}' % HASH, Skip.FILTERED),
        ('{"host": "localhost", "path": "/x.jpg", "method": "POST", "status": 200}', Skip.FILTERED),
        ('{"host": "localhost", "status": 200}', Skip.MALFORMED),
        ('{"host": 7, "path": "/x.jpg"}', Skip.MALFORMED),
        ('{"host": "localhost", "path": "x.jpg"}', Skip.MALFORMED),
        ('{"host": "localhost", "path": "/x.jpg"', Skip.MALFORMED),
        ("[1, 2]", Skip.MALFORMED),
    ],
)
def test_json_log_lines(line, expected):
    assert parse_line(line) == expected
    assert parse_line(line, "json") == expected


@pytest.mark.parametrize(
    "request_line, status, expected",
    [
        (f"GET /{HASH}.jpg HTTP/1.1", 200, Target(None, f"/{HASH}.jpg")),
        (f"HEAD /{HASH}.jpg?sig=q HTTP/1.0", 304, Target(None, f"/{HASH}.jpg?sig=q")),
        (f"GET http://img0.example.com/{HASH}.jpg HTTP/1.1", 203, Target("img0.example.com", f"/{HASH}.jpg")),
        (f"GET /{HASH}.jpg HTTP/2.0", 404, Skip.FILTERED),
        (f"GET /{HASH}.jpg HTTP/1.1", 302, Skip.FILTERED),
        (f"POST /{HASH}.jpg HTTP/1.1", 200, Skip.FILTERED),
        ("-", 400, Skip.MALFORMED),
        ("GET * HTTP/1.1", 200, Skip.MALFORMED),
    ],
)
def test_combined_log_lines(request_line, status, expected):
    line = COMBINED.format(request=request_line, status=status)
    assert parse_line(line) == expected
    assert parse_line(line, "combined") == expected


def test_a_forced_format_refuses_the_others():
    assert parse_line(f"/{HASH}.jpg", "json") is Skip.MALFORMED
    assert parse_line('{"path": "/x.jpg"}', "combined") is Skip.MALFORMED


def test_targets_are_read_lazily_and_every_line_is_counted():
    lines = [f"/{HASH}.jpg", "", "nonsense", f"/{HASH}.jpg?sig=other", "/b.jpg", '{"path": "/c.jpg", "status": 500}']
    consumed = []
    counts = InputCounts()
    targets = read_targets((consumed.append(line) or line for line in lines), counts, seen=Seen())
    assert next(targets) == Target(None, f"/{HASH}.jpg")
    assert len(consumed) == 1
    assert list(targets) == [Target(None, "/b.jpg")]
    assert (counts.lines, counts.targets, counts.duplicates) == (6, 2, 1)
    assert counts.skipped == {Skip.BLANK: 1, Skip.MALFORMED: 1, Skip.FILTERED: 1}


def test_limit_counts_lines_and_without_dedupe_duplicates_are_replayed():
    counts = InputCounts()
    assert list(read_targets(["/a.jpg", "/a.jpg", "/a.jpg"], counts, limit=2)) == [Target(None, "/a.jpg")] * 2
    assert counts.lines == 2


def test_dedupe_keys_on_host_and_path_and_forgets_the_oldest_past_its_capacity():
    seen = Seen(capacity=2)
    assert [seen.add(Target("a", "/1.jpg")), seen.add(Target("b", "/1.jpg")), seen.add(Target("a", "/1.jpg?q"))] == [True, True, False]
    seen.add(Target(None, "/2.jpg"))
    assert seen.add(Target("a", "/1.jpg")) is True


def test_reservoir_keeps_everything_up_to_its_size_then_a_sample():
    reservoir = Reservoir(3, draw=lambda offered: offered - 1)
    for n in range(3):
        reservoir.add(Target(None, f"/{n}"))
    assert [t.path for t in reservoir.targets] == ["/0", "/1", "/2"]
    reservoir.add(Target(None, "/3"))  # drawn 3: outside the sample
    assert [t.path for t in reservoir.targets] == ["/0", "/1", "/2"]
    sampled = Reservoir(2, draw=lambda _: 0)
    for n in range(5):
        sampled.add(Target(None, f"/{n}"))
    assert [t.path for t in sampled.targets] == ["/4", "/1"]


def test_lines_are_counted_in_plain_and_gzip_files(tmp_path):
    (tmp_path / "a.log").write_text("one\ntwo\nthree")
    with gzip.open(tmp_path / "b.log.gz", "wt") as handle:
        handle.write("one\ntwo\n")
    assert count_lines(str(tmp_path / "a.log")) == 3
    assert count_lines(str(tmp_path / "b.log.gz")) == 2
    assert count_lines("-") is None


def test_a_reservoir_with_seen_samples_distinct_targets():
    reservoir = Reservoir(10, seen=Seen())
    for path in ["/a", "/b", "/a", "/a?q", "/c"]:
        reservoir.add(Target(None, path))
    assert [t.path for t in reservoir.targets] == ["/a", "/b", "/c"]
