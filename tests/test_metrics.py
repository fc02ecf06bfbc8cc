"""/metrics of a real `twistd`: counters move exactly as requests do."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.configs import SAMPLES, write_config
from tests.twistd import Twistd

SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"


@pytest.fixture
def proxy(tmp_path):
    twistd = Twistd(write_config(tmp_path, {("resize", "presets"): "small=64x0"}), tmp_path)
    yield twistd
    twistd.stop()


def scrape(proxy) -> dict[tuple[str, tuple], float]:
    status, _, body = proxy.get("/metrics", admin=True)
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_three_misses_then_seven_hits_is_a_hit_ratio_of_0_7(proxy):
    for purge in (True, True, False):
        assert proxy.get(f"/{SAMPLE}.jpg")[1]["X-Cache"] == "MISS"
        if purge:
            assert proxy.get(f"/purge/{SAMPLE}", admin=True, method="POST")[0] == 200
    for _ in range(7):
        assert proxy.get(f"/{SAMPLE}.jpg")[1]["X-Cache"] == "HIT-MEMORY"
    samples = scrape(proxy)
    assert value(samples, "edgeproxy_cache_requests_total", result="hit", tier="memory") == 7
    assert value(samples, "edgeproxy_cache_requests_total", result="miss", tier="memory") == 3
    assert value(samples, "edgeproxy_cache_requests_total", result="miss", tier="disk") == 3
    assert value(samples, "edgeproxy_cache_hit_ratio") == pytest.approx(0.7)
    assert value(samples, "edgeproxy_cache_objects", tier="memory") == 1
    size = (SAMPLES / f"{SAMPLE}.jpg").stat().st_size
    assert size < value(samples, "edgeproxy_cache_bytes", tier="memory") < size + 1024


def test_variants_rendered_from_an_original_on_disk_are_no_hits(tmp_path):
    """
    An original too big for memory lives on disk; its variants are MISS, then RENDERED,
    and neither is a hit. The original's own disk read inside the second fill counted as
    a disk hit of a request, and every variant miss as two disk lookups: a hit ratio of
    0.5 with no hit served.
    """
    size = (SAMPLES / f"{SAMPLE}.jpg").stat().st_size
    changes = {("resize", "presets"): "small=64x0 tiny=32x0", ("cache", "max_object_bytes"): str(size // 2)}
    proxy = Twistd(write_config(tmp_path, changes), tmp_path)
    try:
        assert [proxy.get(f"/{SAMPLE}/{preset}.jpg")[1]["X-Cache"] for preset in ("small", "tiny")] == ["MISS", "RENDERED"]
        samples = scrape(proxy)
    finally:
        proxy.stop()
    lookups = {(result, tier): value(samples, "edgeproxy_cache_requests_total", result=result, tier=tier)
               for result in ("hit", "miss") for tier in ("memory", "disk")}
    assert lookups == {("hit", "memory"): 0, ("miss", "memory"): 2, ("hit", "disk"): 0, ("miss", "disk"): 2}
    assert value(samples, "edgeproxy_cache_hit_ratio") == 0


def test_renders_and_the_queue_are_exported_and_no_created_series(proxy):
    assert proxy.get(f"/{SAMPLE}/small.jpg")[0] == 200
    samples = scrape(proxy)
    assert value(samples, "edgeproxy_render_seconds_count") == 1
    assert value(samples, "edgeproxy_render_queue") == 0
    assert value(samples, "edgeproxy_disk_tier_ready") == 1
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_responses_are_counted_by_status_and_their_bytes_by_cache_result(proxy):
    size = (SAMPLES / f"{SAMPLE}.jpg").stat().st_size
    assert proxy.get(f"/{SAMPLE}.jpg")[1]["X-Cache"] == "MISS"
    for _ in range(4):
        assert proxy.get(f"/{SAMPLE}.jpg")[1]["X-Cache"] == "HIT-MEMORY"
    assert proxy.get(f"/{SAMPLE}.jpg", method="HEAD")[0] == 200
    assert proxy.get(f"/{'0' * 40}.jpg")[0] == 404
    assert proxy.get("/nope")[0] == 404
    samples = scrape(proxy)
    assert value(samples, "edgeproxy_requests_total", code="200") == 6
    assert value(samples, "edgeproxy_requests_total", code="404") == 2
    assert value(samples, "edgeproxy_response_bytes_total", cache="miss") == size
    assert value(samples, "edgeproxy_response_bytes_total", cache="hit-memory") == 4 * size  # HEAD sends no body
    assert value(samples, "edgeproxy_response_bytes_total", cache="none") == len(b"image not found\n") + len(b"not found\n")
    assert value(samples, "edgeproxy_response_seconds_count", cache="hit-memory") == 5
    assert value(samples, "edgeproxy_response_seconds_bucket", cache="hit-memory", le="+Inf") == 5
    assert value(samples, "edgeproxy_response_seconds_count", cache="none") == 2
