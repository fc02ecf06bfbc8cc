"""The access log of a real `twistd`: one JSON line per kept request, every error up to the cap."""

import json

from tests.configs import write_config
from tests.twistd import Twistd

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"


def run(tmp_path, changes, requests) -> list[dict]:
    log = tmp_path / "access.jsonl"
    twistd = Twistd(write_config(tmp_path, {("log", "access_log"): str(log), **changes}), tmp_path)
    try:
        for path in requests:
            twistd.get(path, headers={"Host": "img0.example.com"})
    finally:
        twistd.stop()  # stopping writes the lines still pending
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_request_is_a_json_line_with_its_fields(tmp_path):
    lines = run(tmp_path, {("log", "success_rate"): "1"}, [f"/{SAMPLE}.jpg", f"/{SAMPLE}.jpg", f"/{SAMPLE}/thumb.jpg", "/nope"])
    assert [(line["path"], line["status"], line["cache"]) for line in lines] == [
        (f"/{SAMPLE}.jpg", 200, "MISS"),
        (f"/{SAMPLE}.jpg", 200, "HIT-MEMORY"),
        (f"/{SAMPLE}/thumb.jpg", 200, "RENDERED"),
        ("/nope", 404, "NONE"),
    ]
    first, _, rendered, error = lines
    assert first["host"] == "img0.example.com" and first["client"] == "127.0.0.1" and first["method"] == "GET"
    assert first["bytes"] > 1000 and first["origin_ms"] is not None and first["total_ms"] > 0
    assert rendered["render_ms"] is not None and rendered["origin_ms"] is None
    assert error["bytes"] == len(b"not found\n")


def test_successes_sampled_out_and_errors_capped_per_minute(tmp_path):
    requests = [f"/{SAMPLE}.jpg"] * 5 + ["/nope"] * 6
    lines = run(tmp_path, {("log", "success_rate"): "0", ("log", "errors_per_minute"): "3"}, requests)
    assert [line["status"] for line in lines] == [404, 404, 404]
