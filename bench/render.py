"""
Render benchmark: how many distinct variants per second edgeproxy renders end to end
(a real `twistd -n edgeproxy` over HTTP), next to raw in-process pyvips, Pillow the way
Thumbor's PIL engine uses it, and Thumbor itself over HTTP when it is installed, all on
the same generated 2000x1500 photo-like JPEGs made into 320 px wide JPEGs, in one run.
For each edgeproxy it also measures memory hits with wrk, alone and during renders.
Every server is started first, then rounds measure every row in turn (the shared
machine's load drifts), and one table gives medians and same-round ratios.

    python bench/render.py [--rounds 3] [--seconds 4] [--clients 8] [--hit-seconds 3] [--images 40]

Needs pyvips (the project's), Pillow and Debian's wrk; Thumbor is optional
(`pip install thumbor`, never a dependency of edgeproxy). Everything talks only to
127.0.0.1, every wait is bounded, and every process it starts is stopped by PID,
also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    SAMPLE,
    descendants,
    abort_on_signals,
    free_port,
    log_tail,
    start_edgeproxy,
    stop_tree,
    wait_until_serving,
    wrk,
)

WIDTH, HEIGHT, TARGET = 2000, 1500, 320
# Every edgeproxy request is a variant never asked before, so each one renders. Widths
# 260..380 (centred on 320) all take the same JPEG shrink-on-load as 320 does (libvips
# leaves a factor of two for the final resize: a 1/2 load, 1000x750, for widths 251-500),
# so a render costs about what a 320 one does; `{w}x4000` (fit inside) is the same
# picture under another cache key, doubling the supply of distinct variants.
WIDTHS = range(260, 381)
HEIGHTS = (0, 4000)
QUALITY = 82
# A variant rendered from an original already in the cache, no origin asked.
RENDERED = "200 RENDERED"
INI = REPO / "conf" / "edgeproxy.ini"


# --- images ------------------------------------------------------------------------------

def generate(folder: Path, count: int) -> list[tuple[str, bytes]]:
    """Photo-like JPEGs as tests/images.py photo() makes them (gradients plus noise), with
    noise in every band so they weigh what camera photos do (~300-500 KB). The noise field
    is made once and cropped at a different offset per image."""
    pad = 200
    noise = pyvips.Image.gaussnoise(WIDTH + pad, HEIGHT + pad, sigma=1.0, mean=0).bandjoin(
        [pyvips.Image.gaussnoise(WIDTH + pad, HEIGHT + pad, sigma=s, mean=0) for s in (0.8, 0.9)]).copy_memory()
    xy = pyvips.Image.xyz(WIDTH, HEIGHT).copy_memory()
    images = []
    for seed in range(count):
        red = (xy[0] * 255 / WIDTH + seed * 37) % 256
        green = xy[1] * 255 / HEIGHT
        blue = (xy[0] + xy[1]) * 128 / (WIDTH + HEIGHT) + 64 + seed % 64
        grain = noise.crop((seed * 7) % pad, (seed * 13) % pad, WIDTH, HEIGHT) * (5.5 + seed % 6 * 0.7)
        data = (red.bandjoin([green, blue]) + grain).cast("uchar").copy(interpretation="srgb").jpegsave_buffer(Q=85)
        name = hashlib.sha1(data).hexdigest()
        (folder / f"{name}.jpg").write_bytes(data)
        images.append((name, data))
    return images


# --- in-process renderers ----------------------------------------------------------------

def pyvips_render(data: bytes) -> bytes:
    return pyvips.Image.thumbnail_buffer(data, TARGET, height=10_000_000, size="down").jpegsave_buffer(Q=QUALITY, keep="none")


def pillow_render(data: bytes) -> bytes:
    """What Thumbor's PIL engine does for /unsafe/320x0/: draft (JPEG DCT scaling), then a
    LANCZOS resize to the exact size, then a baseline JPEG save."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        size = (TARGET, round(TARGET * image.height / image.width))
        image.draft("RGB", size)
        small = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def width_of(jpeg: bytes) -> int:
    return pyvips.Image.new_from_buffer(jpeg, "").width


def in_process(render: Callable[[bytes], bytes], sources: list[bytes], threads: int, seconds: float) -> float:
    """Renders per second with `threads` threads looping over `sources` for `seconds`."""
    turn = itertools.count()

    def loop(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            render(sources[next(turn) % len(sources)])
            if time.perf_counter() <= deadline:
                done += 1
        return done

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, [time.perf_counter() + 0.3] * threads))  # warm-up
        started = time.perf_counter()
        total = sum(pool.map(loop, [started + seconds] * threads))
    return total / seconds


# --- HTTP load ---------------------------------------------------------------------------

async def _http_load(port: int, paths: Iterator[str], clients: int, seconds: float, keep_alive: bool) -> Counter:
    """`clients` keep-alive connections, each asking for the next path as soon as its
    answer is in; counts answers completed within `seconds` by status (and X-Cache).
    Without `keep_alive`, a new connection per request (lets a multi-process server
    that accepts on one socket spread them)."""
    close = b"" if keep_alive else b"Connection: close\r\n"
    loop = asyncio.get_running_loop()
    counts: Counter = Counter()
    deadline = loop.time() + seconds

    async def client() -> None:
        reader = writer = None
        try:
            while loop.time() < deadline:
                try:
                    path = next(paths)
                except StopIteration:
                    counts["ran out of variants"] += 1
                    return
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + close + b"\r\n")
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if ": " in line)}
                    await reader.readexactly(int(headers.get("content-length", "0")))
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
                    counts[f"error {type(error).__name__}"] += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                if loop.time() <= deadline:
                    status = head[0].split(" ")[1]
                    cache = headers.get("x-cache", "")
                    counts[f"200 {cache}".strip() if status == "200" else status] += 1
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + 0.1)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            counts[f"error {type(result).__name__}"] += 1
    return counts


def http_load(port: int, paths: Iterator[str], clients: int, seconds: float, keep_alive: bool = True) -> Counter:
    return asyncio.run(_http_load(port, paths, clients, seconds, keep_alive))


def renders_per_s(counts: Counter, seconds: float, cached_label: str = RENDERED) -> float:
    return counts[cached_label] / seconds


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Host": "localhost"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


# --- edgeproxy ---------------------------------------------------------------------------

def render_modes() -> list[str]:
    """`processes` too when this checkout's config knows [resize] render_mode."""
    source = (REPO / "edgeproxy" / "config.py").read_text()
    return ["threads", "processes"] if "render_mode" in source else ["threads"]


def edgeproxy_changes(origin: Path, workers: int, mode: str | None) -> dict[str, str]:
    ini = INI.read_text()
    sizes = " ".join(f"{w}x{h}" for w in WIDTHS for h in HEIGHTS)
    changes = {
        "memory_bytes = 256MiB": "memory_bytes = 1GiB",
        "root = ../samples": f"root = {origin}",
        "allowed_sizes = 100x100-cover 200x200-cover 480x0 960x0": f"allowed_sizes = {sizes}",
    }
    workers_line = next(line for line in ini.splitlines() if line.startswith("render_workers = "))
    changes[workers_line] = f"render_workers = {workers}"
    if mode is not None:
        mode_line = next((line for line in ini.splitlines() if line.startswith("render_mode = ")), None)
        if mode_line is None:  # the key exists in config.py but not yet in the bundled file
            changes[workers_line] += f"\nrender_mode = {mode}"
        else:
            changes[mode_line] = f"render_mode = {mode}"
    for old in changes:
        if old not in ini:
            raise RuntimeError(f"conf/edgeproxy.ini no longer has the line {old!r}: update bench/render.py")
    return changes


def variant_paths(names: list[str]) -> Iterator[str]:
    """Each variant once: every image at one size, then the next size."""
    for height in HEIGHTS:
        for width in WIDTHS:
            for name in names:
                yield f"/{name}/{width}x{height}.jpg"


class Row:
    """One line of the table: a system at a worker count, measured once per round."""

    def __init__(self, system: str, mode: str, workers: int, measure: Callable[[float], float]):
        self.system, self.mode, self.workers = system, mode, workers
        self.measure = measure
        self.rates: list[float] = []
        self.problems: Counter = Counter()
        self.hits_alone: list[float] = []
        self.hits_during: list[float] = []
        self.renders_during: list[float] = []
        self.hit_errors = 0.0


class EdgeServer:
    """A real `twistd -n edgeproxy` over the originals folder, every original fetched once."""

    def __init__(self, tmp: Path, origin: Path, names: list[str], mode: str, workers: int, args: argparse.Namespace):
        workdir = tmp / f"edge-{mode}-{workers}"
        workdir.mkdir()
        self.port, self.args, self.kids = free_port(), args, []
        self.paths = variant_paths(names)
        changes = edgeproxy_changes(origin, workers, mode if len(render_modes()) > 1 else None)
        # One process, so that `workers` renders run at once, as in the rows it is compared with.
        self.process = start_edgeproxy(self.port, workdir, changes, ["--workers", "1"])
        base = f"http://127.0.0.1:{self.port}"
        try:
            wait_until_serving(f"{base}/{SAMPLE}", seconds=30)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"edgeproxy ({mode}, {workers}) did not start:\n{log_tail(workdir / 'twistd.log')}") from None
        for name in names:  # every original fetched once, so every render below starts from memory
            status, _, _ = get(f"{base}/{name}.jpg")
            assert status == 200, status
        status, headers, _ = get(f"{base}/{names[0]}.jpg")
        assert headers.get("x-cache") == "HIT-MEMORY", headers.get("x-cache")
        self.hit_url = f"{base}/{SAMPLE}"
        status, headers, body = get(base + next(self.paths))  # one render checked by hand
        assert status == 200 and headers.get("x-cache") == "RENDERED" and body[:2] == b"\xff\xd8", (status, headers)
        assert width_of(body) == WIDTHS[0], width_of(body)
        http_load(self.port, self.paths, args.clients, 1.0)  # warm-up (starts render processes), not reported
        wrk(self.hit_url, 1, 32)
        self.kids = descendants(self.process.pid)

    def renders(self, row: Row, seconds: float) -> float:
        counts = http_load(self.port, self.paths, self.args.clients, seconds)
        row.problems.update({k: v for k, v in counts.items() if k != RENDERED})
        return renders_per_s(counts, seconds)

    def hits(self, row: Row) -> None:
        """wrk on a cached original alone, then while the render load runs."""
        seconds = self.args.hit_seconds
        alone = wrk(self.hit_url, seconds, 32)
        during: dict[str, Counter] = {}
        load_seconds = seconds + 1.5
        loader = threading.Thread(target=lambda: during.update(counts=http_load(self.port, self.paths, self.args.clients, load_seconds)))
        loader.start()
        try:
            time.sleep(0.5)
            with_renders = wrk(self.hit_url, seconds, 32)
        finally:
            loader.join(load_seconds + 30)
        counts = during.get("counts", Counter())
        row.hits_alone.append(alone["rps"])
        row.hits_during.append(with_renders["rps"])
        row.renders_during.append(renders_per_s(counts, load_seconds))
        row.hit_errors += alone["errors"] + with_renders["errors"]
        row.problems.update({f"{k} (during wrk)": v for k, v in counts.items() if k != RENDERED})

    def stop(self) -> None:
        stop_tree(self.process, list(dict.fromkeys(self.kids + descendants(self.process.pid))))


class ThumborServer:
    """Thumbor over HTTP: file loader, no storage, no result storage, so every request renders."""

    def __init__(self, executable: str, tmp: Path, origin: Path, names: list[str], workers: int, args: argparse.Namespace):
        workdir = tmp / f"thumbor-{workers}"
        workdir.mkdir()
        conf = workdir / "thumbor.conf"
        conf.write_text(
            "LOADER = 'thumbor.loaders.file_loader'\n"
            f"FILE_LOADER_ROOT_PATH = {str(origin)!r}\n"
            "STORAGE = 'thumbor.storages.no_storage'\n"  # no copy of the originals on disk
            "RESULT_STORAGE = None\n"  # every request renders
            "ENGINE = 'thumbor.engines.pil'\n"
            "ALLOW_UNSAFE_URL = True\n"
            f"QUALITY = {QUALITY}\n"
            "PROGRESSIVE_JPEG = False\n"  # baseline JPEG like edgeproxy and Pillow rows
            "AUTO_WEBP = False\n"
        )
        self.port, self.args, self.kids = free_port(), args, []
        command = [executable, "--ip", "127.0.0.1", "--port", str(self.port), "--conf", str(conf), "--processes", str(workers), "--log-level", "error"]
        with open(workdir / "thumbor.log", "wb") as log:
            self.process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{self.port}"
        try:
            wait_until_serving(f"{base}/healthcheck", seconds=60)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"thumbor did not start:\n{log_tail(workdir / 'thumbor.log')}") from None
        time.sleep(0.5)  # forked workers up
        self.kids = descendants(self.process.pid)
        status, headers, body = get(f"{base}/unsafe/{TARGET}x0/{names[0]}.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8" and width_of(body) == TARGET, (status, headers)
        self.paths = (f"/unsafe/{TARGET}x0/{names[i % len(names)]}.jpg" for i in itertools.count())
        http_load(self.port, self.paths, args.clients, 1.0, keep_alive=False)  # warm-up

    def renders(self, row: Row, seconds: float) -> float:
        # A connection per request: Thumbor's processes share one listening socket and
        # a process busy rendering does not accept, so new connections spread over them
        # (8 keep-alive connections would all land on the first process).
        counts = http_load(self.port, self.paths, self.args.clients, seconds, keep_alive=False)
        row.problems.update({k: v for k, v in counts.items() if k != "200"})
        return renders_per_s(counts, seconds, "200")

    def stop(self) -> None:
        stop_tree(self.process, list(dict.fromkeys(self.kids + descendants(self.process.pid))))


# --- thumbor -----------------------------------------------------------------------------

def thumbor_executable() -> tuple[str | None, str]:
    try:
        version = importlib.metadata.version("thumbor")
    except importlib.metadata.PackageNotFoundError:
        return None, "the thumbor package is not installed in this Python (pip install thumbor)"
    beside = Path(sys.executable).parent / "thumbor"
    executable = str(beside) if beside.exists() else shutil.which("thumbor")
    if executable is None:
        return None, f"thumbor {version} is installed but its `thumbor` script is not found"
    return executable, version


# --- main --------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def measure(rows: list[Row], edges: dict[Row, EdgeServer], args: argparse.Namespace) -> None:
    """Round after round, every row for `seconds` in turn, then every edgeproxy's hits:
    on a shared machine the load drifts, and each round's rows see about the same."""
    for round_ in range(args.rounds):
        for row in rows:
            row.rates.append(row.measure(args.seconds))
        for row, edge in edges.items():
            edge.hits(row)
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{r.system} {r.mode} x{r.workers} {r.rates[-1]:.1f}" for r in rows), file=sys.stderr)


def ratio(row: Row, other: Row | None) -> str:
    """The median over rounds of this row's rate over the other's in the same round."""
    if other is None or other is row:
        return "-"
    per_round = [mine / theirs for mine, theirs in zip(row.rates, other.rates) if theirs]
    return f"{median(per_round):.2f}x" if per_round else "-"


def print_table(rows: list[Row], sources: list[bytes], thumbor: str | None, thumbor_note: str, args: argparse.Namespace, started: float) -> None:
    import PIL

    sizes = sorted(len(d) for d in sources)
    cpus = os.cpu_count() or 1
    print(f"render throughput: {len(sources)} distinct {WIDTH}x{HEIGHT} JPEGs ({sizes[0] // 1000}-{sizes[-1] // 1000} KB, "
          f"median {sizes[len(sizes) // 2] // 1000} KB) -> {TARGET} px wide JPEG Q{QUALITY}; {args.rounds} rounds of {args.seconds:g} s "
          f"per row, interleaved; medians; {args.clients} HTTP clients; {cpus} CPUs; load average before {os.getloadavg()[0]:.1f}")
    print(f"pyvips {pyvips.__version__} (libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}), "
          f"Pillow {PIL.__version__}, " + (f"thumbor {thumbor_note}" if thumbor else f"thumbor: not installed ({thumbor_note})"))
    print("edgeproxy: every request a new variant (widths 260-380, x0 and x4000) of a cached original; Thumbor: /unsafe/320x0/, no result storage")
    print("ratios: the median over rounds of the two rows' rates in the same round")
    print()
    by_key = {(row.system, row.workers): row for row in rows}
    others = ("raw pyvips", "Pillow") + (("Thumbor",) if thumbor else ())
    header = f"{'system':<11}{'mode':<20}{'workers':>7}{'renders/s':>11}{'range':>13}{'/pyvips':>9}{'/Pillow':>9}"
    header += f"{'/Thumbor':>10}" if thumbor else ""
    header += f"{'hits alone':>12}{'hits w/ renders':>17}{'hit ratio':>11}{'renders/s w/ wrk':>18}"
    print(header)
    for row in rows:
        line = f"{row.system:<11}{row.mode:<20}{row.workers:>7}{median(row.rates):>11.1f}{f'{min(row.rates):.0f}-{max(row.rates):.0f}':>13}"
        for other in others:
            line += f"{ratio(row, by_key.get((other, row.workers))):>{10 if other == 'Thumbor' else 9}}"
        if row.hits_alone:
            hit_ratio = median([d / a for a, d in zip(row.hits_alone, row.hits_during) if a])
            line += f"{median(row.hits_alone):>12.0f}{median(row.hits_during):>17.0f}{hit_ratio:>10.2f}x{median(row.renders_during):>18.1f}"
        print(line)
    print()
    print(f"hits: wrk -t1 -c32 -d{args.hit_seconds}s on a cached original ({SAMPLE[:8]}…, {(REPO / 'samples' / SAMPLE).stat().st_size} bytes), "
          f"alone, then while {args.clients} clients keep asking for new variants, once per round; goal: hit ratio >= 0.80x")
    if thumbor is None:
        print(f"thumbor: not installed ({thumbor_note})")
    for row in rows:
        notes = [f"{k}: {v}" for k, v in sorted(row.problems.items())]
        if row.hit_errors:
            notes.append(f"wrk errors: {row.hit_errors:.0f}")
        if notes:
            print(f"note {row.system} {row.mode} x{row.workers}: " + "; ".join(notes))
    print(f"total {time.monotonic() - started:.0f} s, load average after {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each row's render measurement in each round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures every row once, in turn")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients driving renders")
    parser.add_argument("--hit-seconds", type=int, default=3, help="length of each wrk hit measurement")
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    try:
        import PIL  # noqa: F401
    except ImportError:
        sys.exit("Pillow is not installed: pip install Pillow (for this benchmark only)")
    # A hard bound on the whole run; the finally blocks still stop every process.
    abort_on_signals(signal.SIGTERM, signal.SIGALRM)
    signal.alarm(int(240 + args.rounds * (10 * (args.seconds + 1) + 4 * (2 * args.hit_seconds + 3))))

    worker_counts = sorted({1, os.cpu_count() or 1})
    thumbor, thumbor_note = thumbor_executable()
    started = time.monotonic()
    servers: list[EdgeServer | ThumborServer] = []
    with tempfile.TemporaryDirectory(prefix="edgeproxy-render-") as tmp_name:
        tmp = Path(tmp_name)
        origin = tmp / "originals"
        origin.mkdir()
        images = generate(origin, args.images)
        shutil.copy(REPO / "samples" / SAMPLE, origin / SAMPLE)  # the hit measured by wrk
        names = [name for name, _ in images]
        sources = [data for _, data in images]
        # raw pyvips set up as edgeproxy's render threads are: no operation cache (it
        # would answer a repeated thumbnail of the same buffer from memory), libvips'
        # own threading at 1 so `threads` is the parallelism.
        pyvips.cache_set_max(0)
        pyvips.cache_set_max_mem(0)
        pyvips.concurrency_set(1)
        assert width_of(pyvips_render(sources[0])) == TARGET and width_of(pillow_render(sources[0])) == TARGET
        rows: list[Row] = []
        edges: dict[Row, EdgeServer] = {}
        try:
            for system, function in (("raw pyvips", pyvips_render), ("Pillow", pillow_render)):
                for workers in worker_counts:
                    rows.append(Row(system, "in-process", workers, lambda s, f=function, w=workers: in_process(f, sources, w, s)))
            if thumbor is not None:
                for workers in worker_counts:
                    servers.append(ThumborServer(thumbor, tmp, origin, names, workers, args))
                    rows.append(Row("Thumbor", "HTTP, processes", workers, None))
                    rows[-1].measure = lambda s, row=rows[-1], server=servers[-1]: server.renders(row, s)
            for mode in render_modes():
                for workers in worker_counts:
                    servers.append(EdgeServer(tmp, origin, names, mode, workers, args))
                    rows.append(Row("edgeproxy", f"HTTP, {mode}", workers, None))
                    rows[-1].measure = lambda s, row=rows[-1], server=servers[-1]: server.renders(row, s)
                    edges[rows[-1]] = servers[-1]
            measure(rows, edges, args)
        finally:
            for server in servers:
                server.stop()
    print_table(rows, sources, thumbor, thumbor_note, args, started)


if __name__ == "__main__":
    main()
