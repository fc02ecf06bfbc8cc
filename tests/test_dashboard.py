"""The Grafana dashboard in conf/ only uses series a real edgeproxy exports."""

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.configs import REPO, write_config
from tests.twistd import Twistd

DASHBOARD = REPO / "conf" / "grafana-edgeproxy.json"
SAMPLE = "a6fc62329945ddc6aa13a641fe0a90d0885d04a4"


def exported(tmp_path) -> set[str]:
    twistd = Twistd(write_config(tmp_path, {("resize", "presets"): "small=64x0"}), tmp_path)
    try:
        for path in (f"/{SAMPLE}.jpg", f"/{SAMPLE}.jpg", f"/{SAMPLE}/small.jpg", "/missing"):
            twistd.get(path)
        body = twistd.get("/metrics", admin=True)[2].decode()
    finally:
        twistd.stop()
    return {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}


def test_every_series_in_the_dashboard_is_exported(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\bedgeproxy_[a-z_]+", expr)}
    assert len(used) > 15
    assert used - exported(tmp_path) == set()


def test_hit_ratio_is_computed_from_counters_by_tier_and_by_bytes():
    panels = {panel["title"]: panel for panel in json.loads(DASHBOARD.read_text())["panels"]}
    requests = [t["expr"] for t in panels["Hit ratio (requests)"]["targets"]]
    assert all(expr.startswith("sum(rate(edgeproxy_cache_requests_total{result=\"hit\"") for expr in requests)
    assert {t["legendFormat"] for t in panels["Hit ratio (requests)"]["targets"]} >= {"memory", "disk (of memory misses)"}
    assert "edgeproxy_response_bytes_total" in panels["Hit ratio (bytes)"]["targets"][0]["expr"]
