"""
GET /status on the admin port: one HTML page for a person on call — is the cache
warm (hit ratio over the last hour, plotted), how full are the tiers, which backends
are down, which images keep missing. Self-contained: inline SVG and CSS, no script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from html import escape

from twisted.web.resource import Resource
from twisted.web.server import Request

from edgeproxy.imageservice import ImageService
from edgeproxy.metrics import TrafficHistory
from edgeproxy.origins.guard import GuardedBackend

_WIDTH, _HEIGHT, _PAD = 720, 180, 36
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:60em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.2em .9em;text-align:right;border-bottom:1px solid #ddd}
th:first-child,td:first-child{text-align:left}.down{color:#b00;font-weight:bold}.up{color:#070}
.big{font-size:1.6em;font-weight:bold}svg{background:#fafafa;border:1px solid #ddd}
"""


class StatusResource(Resource):
    isLeaf = True

    def __init__(
        self,
        images: ImageService,
        history: TrafficHistory,
        backends: Callable[[], Sequence[GuardedBackend]],
        extra: Callable[[], list[str]] = list,
    ):
        """`extra` adds sections at the end (the supervisor's table of workers)."""
        super().__init__()
        self._images = images
        self._history = history
        self._backends = backends
        self._extra = extra

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy", b"default-src 'none'; style-src 'unsafe-inline'")
        sections = [self._summary(), _plot(self._history.ratios()), self._tiers(), self._backends_table(), self._misses(), *self._extra()]
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=10>"
            f"<title>edgeproxy status</title><style>{_STYLE}</style></head><body><h1>edgeproxy status</h1>"
            + "".join(sections)
            + "</body></html>"
        )
        return page.encode()

    def _summary(self) -> str:
        history = self._history
        last, now = (history.samples[-1] if history.samples else history.now()), history.now()
        rate = (now[2] - last[2]) / (now[0] - last[0]) if now[0] > last[0] else 0.0
        queue = self._images.queue
        return (
            f"<p><span class=big id=ratio5m>{history.hit_ratio():.1%}</span> hit ratio, last 5 minutes · "
            f"{history.hit_ratio(3600):.1%} last hour · {rate:.1f} lookups/s · "
            f"renders: {queue.running} running, {queue.waiting} waiting, {queue.shed} shed</p>"
        )

    def _tiers(self) -> str:
        memory, disk = self._images.memory, self._images.disk
        disk_state = "indexing" if not disk.ready else ("failing" if not disk.available else "ok")
        rows = [
            ("memory", memory.bytes_used, memory.budget, len(memory), memory.evictions, "ok"),
            ("disk", disk.bytes_used, disk.budget, len(disk), disk.evictions, disk_state),
        ]
        body = "".join(
            f"<tr><td>{name}</td><td>{_size(used)}</td><td>{_size(budget)}</td><td>{used / budget:.0%}</td>"
            f"<td>{objects}</td><td>{evictions}</td><td>{state}</td></tr>"
            for name, used, budget, objects, evictions, state in rows
        )
        head = "<tr><th>tier</th><th>bytes</th><th>budget</th><th>full</th><th>objects</th><th>evictions</th><th>state</th></tr>"
        return f"<h2>Cache tiers</h2><table>{head}{body}</table>"

    def _backends_table(self) -> str:
        backends = self._backends()
        if not backends:
            return "<h2>Backends</h2><p>None.</p>"
        body = "".join(_backend_row(b) for b in sorted(backends, key=lambda b: b.name))
        head = "<tr><th>backend</th><th>state</th><th>in flight</th><th>p95 to headers</th></tr>"
        return f"<h2>Backends</h2><table>{head}{body}</table>"

    def _misses(self) -> str:
        top = self._images.top_misses.top(15)
        if not top:
            return "<h2>Most missed</h2><p>No misses yet.</p>"
        body = "".join(f"<tr><td><code>{escape(str(_text(key)))}</code></td><td>{count}</td></tr>" for key, count in top)
        return f"<h2>Most missed</h2><table><tr><th>key</th><th>misses</th></tr>{body}</table>"


def _backend_row(backend: GuardedBackend) -> str:
    state = "<span class=up>up</span>" if backend.health.up else "<span class=down>DOWN</span>"
    latency = f"{backend.latency.value * 1000:.1f} ms" if backend.latency.measured else "&mdash;"
    return f"<tr><td>{escape(backend.name)}</td><td>{state}</td><td>{backend.in_flight}</td><td>{latency}</td></tr>"


def _plot(points: Iterable[tuple[float, float | None]]) -> str:
    """The hit ratio of each 10 s step over the last hour; gaps where nothing was looked up."""
    points = list(points)
    if not points:
        return "<p>No traffic sampled yet.</p>"
    end = points[-1][0]
    x = lambda t: _PAD + (_WIDTH - 2 * _PAD) * max(0.0, 1 - (end - t) / 3600)  # noqa: E731
    y = lambda r: _HEIGHT - _PAD + (2 * _PAD - _HEIGHT) * r  # noqa: E731
    lines, run = [], []
    for t, ratio in points + [(end, None)]:
        if ratio is None:
            if len(run) == 1:  # a lone step between gaps (or the first one) is a dot
                cx, cy = run[0].split(",")
                lines.append(f'<circle cx={cx} cy={cy} r=3 fill="#0a6"/>')
            elif run:
                lines.append(f'<polyline fill=none stroke="#0a6" stroke-width=2 points="{" ".join(run)}"/>')
            run = []
        else:
            run.append(f"{x(t):.1f},{y(ratio):.1f}")
    grid = "".join(
        f'<line x1={_PAD} x2={_WIDTH - _PAD} y1={y(r):.0f} y2={y(r):.0f} stroke="#ddd"/>'
        f'<text x=4 y={y(r) + 4:.0f} font-size=11>{r:.0%}</text>'
        for r in (0, 0.5, 0.8, 1)
    )
    labels = (
        f'<text x={_PAD} y={_HEIGHT - 8} font-size=11>-60 min</text>'
        f'<text x={_WIDTH - _PAD - 20} y={_HEIGHT - 8} font-size=11>now</text>'
    )
    return (
        f'<h2>Hit ratio, last hour</h2><svg id=plot role=img aria-label="hit ratio over the last hour" '
        f'width={_WIDTH} height={_HEIGHT} viewBox="0 0 {_WIDTH} {_HEIGHT}">{grid}{labels}{"".join(lines)}</svg>'
    )


def _size(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n /= 1024
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def _text(key: object) -> str:
    return key.decode("ascii", "replace") if isinstance(key, bytes) else str(key)
