"""Merging the workers' Prometheus text: pure, no reactor."""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.aggregate import RunningTotals, _Fixed, merge_metrics

WORKER_0 = b"""# HELP edgeproxy_cache_requests_total Cache lookups by tier and outcome.
# TYPE edgeproxy_cache_requests_total counter
edgeproxy_cache_requests_total{result="hit",tier="memory"} 3.0
edgeproxy_cache_requests_total{result="miss",tier="memory"} 1.0
# HELP edgeproxy_cache_bytes Bytes held by each tier.
# TYPE edgeproxy_cache_bytes gauge
edgeproxy_cache_bytes{tier="memory"} 100.0
# HELP edgeproxy_backend_up 1 while a backend takes traffic.
# TYPE edgeproxy_backend_up gauge
edgeproxy_backend_up{backend="a:1"} 1.0
# HELP edgeproxy_render_seconds Time libvips took.
# TYPE edgeproxy_render_seconds histogram
edgeproxy_render_seconds_bucket{le="0.1"} 1.0
edgeproxy_render_seconds_bucket{le="+Inf"} 2.0
edgeproxy_render_seconds_count 2.0
edgeproxy_render_seconds_sum 0.5
# HELP edgeproxy_cache_hit_ratio Hits over lookups in the last 5 minutes.
# TYPE edgeproxy_cache_hit_ratio gauge
edgeproxy_cache_hit_ratio 0.75
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.5
"""
WORKER_1 = (
    WORKER_0.replace(b'memory"} 3.0', b'memory"} 7.0')
    .replace(b'backend="a:1"} 1.0', b'backend="a:1"} 0.0')
    .replace(b'le="0.1"} 1.0', b'le="0.1"} 4.0')
    .replace(b"process_cpu_seconds_total 1.5", b"process_cpu_seconds_total 2.5")
)


def samples(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_counters_gauges_and_buckets_are_summed_backend_up_is_the_minimum_process_series_stay_apart():
    merged = merge_metrics([("0", WORKER_0), ("1", WORKER_1)])
    got = samples(merged.values())
    assert got[("edgeproxy_cache_requests_total", (("result", "hit"), ("tier", "memory")))] == 10
    assert got[("edgeproxy_cache_requests_total", (("result", "miss"), ("tier", "memory")))] == 2
    assert got[("edgeproxy_cache_bytes", (("tier", "memory"),))] == 200
    assert got[("edgeproxy_backend_up", (("backend", "a:1"),))] == 0
    assert got[("edgeproxy_render_seconds_bucket", (("le", "0.1"),))] == 5
    assert got[("edgeproxy_render_seconds_bucket", (("le", "+Inf"),))] == 4
    assert got[("edgeproxy_render_seconds_sum", ())] == 1.0
    assert got[("process_cpu_seconds_total", (("worker", "0"),))] == 1.5
    assert got[("process_cpu_seconds_total", (("worker", "1"),))] == 2.5
    assert "edgeproxy_cache_hit_ratio" not in merged, "recomputed from the summed counts, never summed"


def test_the_merged_families_print_as_valid_text_with_each_family_once():
    text = generate_latest(_Fixed(list(merge_metrics([("0", WORKER_0), ("1", WORKER_1)]).values()))).decode()
    families = list(text_string_to_metric_families(text))
    assert len({f.name for f in families}) == len(families) == 5
    assert text.count("# TYPE edgeproxy_render_seconds histogram") == 1


def test_a_replaced_workers_counts_add_to_the_totals_from_zero():
    """
    The supervisor's hit ratio comes from these totals: summed as the workers report
    them, worker 0's replacement (its counts back to 0) was a drop, and the ratio of the
    next 5 minutes came out -1.0.
    """
    totals = RunningTotals(2)
    totals.add(0, 100, [500, 500])
    totals.add(1, 101, [0, 0])
    assert totals.totals == [500, 500]
    totals.add(0, 200, [10, 20])  # a new process in slot 0
    totals.add(1, 101, [600, 300])
    assert totals.totals == [1110, 820]
    totals.add(0, 200, [15, 20])
    totals.add(1, 101, [600, 300])
    assert totals.totals == [1115, 820]
