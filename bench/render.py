"""
Render benchmark: how many distinct variants per second edgeproxy renders end to end
(a real `twistd -n edgeproxy` over HTTP), next to raw in-process pyvips, Pillow the way
Thumbor's PIL engine uses it, and Thumbor itself over HTTP when it is installed, all on
the same generated 2000x1500 photo-like JPEGs made into 320 px wide JPEGs, in one run.
While renders load edgeproxy it also measures memory hits with wrk, alone and during
the renders. Prints one table.

    python bench/render.py [--seconds 8] [--clients 8] [--hit-seconds 5] [--images 40]

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
from hitpath import (
    REPO,
    SAMPLE,
    free_port,
    start_edgeproxy,
    stop,
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


# --- processes ---------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, read from /proc (children of every thread)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue
            found += kids
            stack += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_tree(process: subprocess.Popen, known: list[int]) -> None:
    """Stop `process` and what it started (by PID: its descendants seen now and `known`)."""
    kids = list(dict.fromkeys(known + descendants(process.pid)))
    if process.poll() is None:
        stop(process)
    leftovers = [pid for pid in kids if alive(pid)]
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in leftovers):
        time.sleep(0.05)
    for pid in leftovers:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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
        list(pool.map(loop, [time.perf_counter() + 1.0] * threads))  # warm-up
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


def problems(counts: Counter, good: str) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != good)


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


def run_edgeproxy(tmp: Path, origin: Path, names: list[str], mode: str, workers: int, args: argparse.Namespace) -> dict:
    workdir = tmp / f"edge-{mode}-{workers}"
    workdir.mkdir()
    port = free_port()
    process = start_edgeproxy(port, workdir, edgeproxy_changes(origin, workers, mode if len(render_modes()) > 1 else None))
    kids: list[int] = []
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(f"{base}/{SAMPLE}", seconds=30)
        except RuntimeError:
            raise RuntimeError(f"edgeproxy ({mode}, {workers}) did not start:\n{log_tail(workdir / 'twistd.log')}") from None
        for name in names:  # every original fetched once, so every render below starts from memory
            status, _, _ = get(f"{base}/{name}.jpg")
            assert status == 200, status
        status, headers, _ = get(f"{base}/{names[0]}.jpg")
        assert headers.get("x-cache") == "HIT-MEMORY", headers.get("x-cache")
        hit_url = f"{base}/{SAMPLE}"
        wrk(hit_url, 1, 32)  # warm-up, not reported
        hits_alone = wrk(hit_url, args.hit_seconds, 32)
        paths = variant_paths(names)
        status, headers, body = get(base + next(paths))  # one render checked by hand
        assert status == 200 and headers.get("x-cache") == "RENDERED" and body[:2] == b"\xff\xd8", (status, headers)
        assert width_of(body) == WIDTHS[0], width_of(body)
        http_load(port, paths, args.clients, 1.0)  # warm-up (starts render processes), not reported
        kids = descendants(process.pid)
        counts = http_load(port, paths, args.clients, args.seconds)
        during: dict[str, Counter] = {}
        load_seconds = args.hit_seconds + 1.5
        loader = threading.Thread(target=lambda: during.update(counts=http_load(port, paths, args.clients, load_seconds)))
        loader.start()
        try:
            time.sleep(0.5)
            hits_during = wrk(hit_url, args.hit_seconds, 32)
        finally:
            loader.join(load_seconds + 30)
        kids = list(dict.fromkeys(kids + descendants(process.pid)))
        return {
            "rps": renders_per_s(counts, args.seconds),
            "problems": problems(counts, RENDERED),
            "hits_alone": hits_alone["rps"],
            "hits_during": hits_during["rps"],
            "hit_errors": hits_alone["errors"] + hits_during["errors"],
            "renders_during": renders_per_s(during.get("counts", Counter()), load_seconds),
            "problems_during": problems(during.get("counts", Counter()), RENDERED),
        }
    finally:
        stop_tree(process, kids)


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


def run_thumbor(executable: str, tmp: Path, origin: Path, names: list[str], workers: int, args: argparse.Namespace) -> dict:
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
    port = free_port()
    command = [executable, "--ip", "127.0.0.1", "--port", str(port), "--conf", str(conf), "--processes", str(workers), "--log-level", "error"]
    with open(workdir / "thumbor.log", "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    kids: list[int] = []
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(f"{base}/healthcheck", seconds=60)
        except RuntimeError:
            raise RuntimeError(f"thumbor did not start:\n{log_tail(workdir / 'thumbor.log')}") from None
        time.sleep(0.5)  # forked workers up
        kids = descendants(process.pid)
        status, headers, body = get(f"{base}/unsafe/{TARGET}x0/{names[0]}.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8" and width_of(body) == TARGET, (status, headers)
        paths = (f"/unsafe/{TARGET}x0/{names[i % len(names)]}.jpg" for i in itertools.count())
        # A connection per request: Thumbor's processes share one listening socket and
        # a process busy rendering does not accept, so new connections spread over them
        # (8 keep-alive connections would all land on the first process).
        http_load(port, paths, args.clients, 1.0, keep_alive=False)  # warm-up
        counts = http_load(port, paths, args.clients, args.seconds, keep_alive=False)
        kids = list(dict.fromkeys(kids + descendants(process.pid)))
        return {"rps": renders_per_s(counts, args.seconds, "200"), "problems": problems(counts, "200")}
    finally:
        stop_tree(process, kids)


# --- main --------------------------------------------------------------------------------

class Abort(Exception):
    pass


def _abort(signum: int, frame: object) -> None:
    raise Abort(f"signal {signal.Signals(signum).name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each render measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients driving renders")
    parser.add_argument("--hit-seconds", type=int, default=5, help="length of each wrk hit measurement")
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    try:
        import PIL
    except ImportError:
        sys.exit("Pillow is not installed: pip install Pillow (for this benchmark only)")
    # A hard bound on the whole run; the finally blocks still stop every process.
    signal.signal(signal.SIGTERM, _abort)
    signal.signal(signal.SIGALRM, _abort)
    signal.alarm(int(180 + 40 * args.seconds))

    cpus = os.cpu_count() or 1
    worker_counts = sorted({1, cpus})
    modes = render_modes()
    thumbor, thumbor_note = thumbor_executable()
    started = time.monotonic()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgeproxy-render-") as tmp_name:
        tmp = Path(tmp_name)
        origin = tmp / "originals"
        origin.mkdir()
        images = generate(origin, args.images)
        shutil.copy(REPO / "samples" / SAMPLE, origin / SAMPLE)  # the hit measured by wrk
        names = [name for name, _ in images]
        sources = [data for _, data in images]
        sizes = sorted(len(d) for d in sources)

        # raw pyvips set up as edgeproxy's render threads are: no operation cache (it
        # would answer a repeated thumbnail of the same buffer from memory), libvips'
        # own threading at 1 so `threads` is the parallelism.
        pyvips.cache_set_max(0)
        pyvips.cache_set_max_mem(0)
        pyvips.concurrency_set(1)
        assert width_of(pyvips_render(sources[0])) == TARGET and width_of(pillow_render(sources[0])) == TARGET
        for workers in worker_counts:
            rows.append({"system": "raw pyvips", "mode": "in-process", "workers": workers, "rps": in_process(pyvips_render, sources, workers, args.seconds)})
        for workers in worker_counts:
            rows.append({"system": "Pillow", "mode": "in-process", "workers": workers, "rps": in_process(pillow_render, sources, workers, args.seconds)})
        if thumbor is not None:
            for workers in worker_counts:
                result = run_thumbor(thumbor, tmp, origin, names, workers, args)
                rows.append({"system": "Thumbor", "mode": "HTTP, processes", **result, "workers": workers})
        for mode in modes:
            for workers in worker_counts:
                result = run_edgeproxy(tmp, origin, names, mode, workers, args)
                rows.append({"system": "edgeproxy", "mode": f"HTTP, {mode}", **result, "workers": workers})

    base = {(row["system"], row["workers"]): row["rps"] for row in rows}
    print(f"render throughput: {len(sources)} distinct {WIDTH}x{HEIGHT} JPEGs ({sizes[0] // 1000}-{sizes[-1] // 1000} KB, "
          f"median {sizes[len(sizes) // 2] // 1000} KB) -> {TARGET} px wide JPEG Q{QUALITY}; {args.seconds:g} s per row, "
          f"{args.clients} HTTP clients; {cpus} CPUs")
    print(f"pyvips {pyvips.__version__} (libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}), "
          f"Pillow {PIL.__version__}, " + (f"thumbor {thumbor_note}" if thumbor else f"thumbor: not installed ({thumbor_note})"))
    print("edgeproxy: every request a new variant (widths 260-380, x0 and x4000) of a cached original; Thumbor: /unsafe/320x0/, no result storage")
    print()
    header = f"{'system':<11}{'mode':<20}{'workers':>7}{'renders/s':>11}{'/pyvips':>9}{'/Pillow':>9}"
    header += f"{'/Thumbor':>10}" if thumbor else ""
    header += f"{'hits alone':>12}{'hits w/ renders':>17}{'hit ratio':>11}{'renders/s w/ wrk':>18}"
    print(header)
    for row in rows:
        w = row["workers"]
        line = f"{row['system']:<11}{row['mode']:<20}{w:>7}{row['rps']:>11.1f}"
        for other in ("raw pyvips", "Pillow") + (("Thumbor",) if thumbor else ()):
            ref = base.get((other, w))
            cell = f"{row['rps'] / ref:.2f}x" if ref and row["system"] != other else "-"
            line += f"{cell:>{10 if other == 'Thumbor' else 9}}"
        if "hits_alone" in row:
            line += f"{row['hits_alone']:>12.0f}{row['hits_during']:>17.0f}{row['hits_during'] / row['hits_alone']:>10.2f}x{row['renders_during']:>18.1f}"
        print(line)
    print()
    print(f"hits: wrk -t1 -c32 -d{args.hit_seconds}s on a cached original ({SAMPLE[:8]}…, {(REPO / 'samples' / SAMPLE).stat().st_size} bytes), "
          f"alone, then while {args.clients} clients keep asking for new variants; goal: hit ratio >= 0.80x")
    if thumbor is None:
        print(f"thumbor: not installed ({thumbor_note})")
    for row in rows:
        notes = [f"{key}: {row[key]}" for key in ("problems", "problems_during") if row.get(key)]
        if row.get("hit_errors"):
            notes.append(f"wrk errors: {row['hit_errors']:.0f}")
        if notes:
            print(f"note {row['system']} {row['mode']} x{row['workers']}: " + "; ".join(notes))
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
