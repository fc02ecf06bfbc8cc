"""
Failover under load: a real `twistd -n edgeproxy` in front of one shard pair (two
image servers with the same files), asked for N distinct images (every request a cold
miss) by C concurrent clients. Halfway through, the primary is killed with SIGKILL.
Prints client errors and p50/p99 before and after the kill, and the origin metrics.

    python bench/failover.py [--requests 1000] [--clients 20] [--delay-ms 5]

Every process it starts is stopped by PID; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
from collections import Counter
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, free_port, start_edgeproxy, stop, wait_until_serving  # noqa: E402


def make_images(folder: Path, count: int) -> list[str]:
    """Distinct small photo-like JPEGs, named by their SHA-1 as the shards store them."""
    names = []
    for seed in range(count):
        image = (pyvips.Image.gaussnoise(96, 64, mean=128 + seed % 64, sigma=40).cast("uchar")).bandjoin([seed % 256, 90])
        body = image.jpegsave_buffer(Q=80)
        name = hashlib.sha1(body).hexdigest()
        (folder / f"{name}.jpg").write_bytes(body)
        names.append(name)
    return names


async def get(port: int, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    status = int(response[9:12]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, time.perf_counter() - started


async def load(port: int, paths: list[str], clients: int, kill_at: int, kill) -> list[tuple[int, float]]:
    results: list[tuple[int, float] | None] = [None] * len(paths)
    queue = iter(range(len(paths)))

    async def client() -> None:
        for index in queue:
            if index == kill_at:
                kill()
            results[index] = await get(port, paths[index])

    await asyncio.gather(*(client() for _ in range(clients)))
    return results  # type: ignore[return-value]


def summary(label: str, results: list[tuple[int, float]]) -> str:
    errors = sum(1 for status, _ in results if status != 200)
    if errors:
        label += " " + ",".join(sorted({str(status) for status, _ in results if status != 200}))
    times = sorted(t * 1000 for _, t in results)
    p50, p99 = times[len(times) // 2], times[max(0, int(len(times) * 0.99) - 1)]
    return f"{label:<14}{len(results):>9}{errors:>8}{p50:>10.1f}{p99:>10.1f}{times[-1]:>10.1f}"


def origin_metrics(admin_port: int) -> list[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    wanted = ("edgeproxy_origin_requests_total", "edgeproxy_backend_up", "edgeproxy_origin_hedges_total")
    return [line for line in text.splitlines() if line.startswith(wanted)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "images").mkdir()
        names = make_images(workdir / "images", args.requests)
        files = [str(workdir / "images" / f"{n}.jpg") for n in names]
        ports = free_port(), free_port()
        shards = [
            subprocess.Popen([sys.executable, str(REPO / "bench" / "slow_origin.py"), str(p), str(args.delay_ms)] + files)
            for p in ports
        ]
        (workdir / "map.ini").write_text(f"[tokenmap]\nffff = 127.0.0.1:{ports[0]} 127.0.0.1:{ports[1]}\n")
        edge_port = free_port()
        changes = {"chain = local": "chain = shards", "tokenmap = tokenmap.ini": f"tokenmap = {workdir / 'map.ini'}"}
        edge = start_edgeproxy(edge_port, workdir, changes)
        try:
            for port in ports:
                wait_until_serving(f"http://127.0.0.1:{port}/count")
            wait_until_serving(f"http://127.0.0.1:{edge_port}/{'0' * 40}.jpg", accept_errors=True)
            admin_port = int(re.search(r"\] Site starting on (\d+)", (workdir / "twistd.log").read_text())[1])
            half = args.requests // 2
            killed = lambda: shards[0].send_signal(signal.SIGKILL)  # noqa: E731
            results = asyncio.run(load(edge_port, [f"/{n}.jpg" for n in names], args.clients, half, killed))
            print(f"{args.requests} cold misses, {args.clients} clients, shard delay {args.delay_ms:g} ms; primary SIGKILLed at request {half}")
            print(f"{'':<14}{'requests':>9}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
            print(summary("before kill", results[:half]))
            print(summary("after kill", results[half:]))
            print(summary("all", results))
            print("\n".join(origin_metrics(admin_port)))
            hops = Counter(h[:150] for h in re.findall(r"origin hop (?!shards).*", (workdir / "twistd.log").read_text()))
            print("failed hops logged:", *(f"{n:>5}  {hop}" for hop, n in hops.most_common()), sep="\n")
        finally:
            stop(edge)
            for shard in shards:
                stop(shard)


if __name__ == "__main__":
    main()
