"""
edgeproxy next to Varnish and nginx: the same generated image set behind the same
origin, each cache on its own 127.0.0.1 port, measured one after another in one run.

    python bench/peers.py [--seconds 10] [--connections 64] [--soak-seconds 600]
                          [--only hits,coldmiss,memory,soak] [--systems edgeproxy,varnish,nginx]

Parts: hits (the same wrk run rotating over every URL: req/s, p50, p99, ratios), coldmiss
(100 clients, h2load --h1, ask for one new image at once: origin requests, waiter latency),
memory (RSS before and after caching the whole set, per cached byte) and soak (a mixed
wrk run with RSS sampled against the memory budget). Needs Debian's varnish, nginx and
wrk; a missing one prints the apt-get command and exits 2. Every process it starts is
stopped by PID, on errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    Abort,
    abort_on_signals,
    burst,
    free_port,
    log_tail,
    origin_count,
    parse_wrk,
    percentile,
    start_slow_origin,
    stop_tree,
    tree_memory_kb,
    wait_for_port,
    wrk,
    wrk_command,
)
from peer_systems import STARTERS, System  # noqa: E402

SYSTEMS = ("edgeproxy", "varnish", "nginx")
PARTS = ("hits", "coldmiss", "memory", "soak")
PACKAGES = {"varnish": ("varnishd", "varnish"), "nginx": ("nginx", "nginx")}  # system: (executable, Debian package)
MIN_BYTES, MAX_BYTES = 10_000, 90_000
# soak mix: a hot set, thumbnails of the cached set, a tail of images twice the budget
# (so that every cache fills and evicts), and never-seen names (404 at the origin)
HOT_SHARE, VARIANT_SHARE, TAIL_SHARE = 0.85, 0.10, 0.04
MB = 1024 * 1024


# --- the image set -----------------------------------------------------------------------

_NOISE: list[pyvips.Image] = []
MAX_W, MAX_H = 1000, 800


def _render(seed: int, width: int, height: int, quality: int, sigma: float) -> bytes:
    if not _NOISE:
        bands = [pyvips.Image.gaussnoise(MAX_W + 64, MAX_H + 64, sigma=s, mean=0) for s in (1.0, 0.8, 0.9)]
        _NOISE.append(bands[0].bandjoin(bands[1:]).copy_memory())
    xy = pyvips.Image.xyz(width, height)
    red = (xy[0] * 255 / width + seed * 37) % 256
    green = xy[1] * 255 / height
    blue = (xy[0] + xy[1]) * 128 / (width + height) + 64 + seed % 64
    grain = _NOISE[0].crop(seed % 64, (seed * 7) % 64, width, height) * sigma
    image = (red.bandjoin([green, blue]) + grain).cast("uchar").copy(interpretation="srgb")
    return image.jpegsave_buffer(Q=quality, strip=True)


def photo(seed: int) -> bytes:
    """A photo-like JPEG (gradients plus grain) of a size drawn between 10 and 90 KB: the
    quality, grain and aspect vary with the seed, and the width is corrected until the
    file lands near its drawn size."""
    rng = random.Random(seed)
    target = rng.uniform(MIN_BYTES * 1.1, MAX_BYTES * 0.95)
    aspect, quality, sigma = rng.choice((0.5625, 0.66, 0.75, 1.0)), rng.randrange(65, 92), rng.uniform(3, 10)
    width = 400
    for _ in range(8):
        height = max(16, min(MAX_H, int(width * aspect)))
        data = _render(seed, width, height, quality, sigma)
        if MIN_BYTES <= len(data) <= MAX_BYTES and abs(len(data) - target) < target * 0.4:
            break
        width = max(32, min(MAX_W, int(width * (target / len(data)) ** 0.5)))
    return data


def generate(folder: Path, count: int, first: int = 0) -> list[tuple[str, int]]:
    """`count` JPEGs (seeds from `first`) written as {sha1}.jpg; (name, size) in seed order."""
    folder.mkdir(exist_ok=True)
    _render(0, 16, 16, 80, 1.0)  # the noise field, made once before the threads share it
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        bodies = list(pool.map(photo, range(first, first + count)))
    images = []
    for data in bodies:
        name = hashlib.sha1(data).hexdigest()
        (folder / f"{name}.jpg").write_bytes(data)
        images.append((name, len(data)))
    return images


# --- requests ----------------------------------------------------------------------------

def fetch_all(port: int, paths: list[str], threads: int = 16) -> tuple[int, int]:
    """GET every path over keep-alive connections; (200 answers, body bytes)."""
    chunks = [paths[i::threads] for i in range(threads)]

    def worker(chunk: list[str]) -> tuple[int, int]:
        ok = size = 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for path in chunk:
                connection.request("GET", path, headers={"Host": "localhost"})
                response = connection.getresponse()
                body = response.read()
                ok += response.status == 200
                size += len(body)
        finally:
            connection.close()
        return ok, size

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(worker, chunks))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def lua_list(paths: list[str]) -> str:
    return "{" + ",".join(f'"{p}"' for p in paths) + "}"


ROTATE_LUA = """local paths = {paths}
local counter = 0
function setup(thread) counter = counter + 1; thread:set("offset", counter * 7919) end
local requests, i = {{}}, 0
function init(args)
    for k, p in ipairs(paths) do requests[k] = wrk.format(nil, p) end
    i = (offset or 0) % #requests
end
function request() i = i % #requests + 1; return requests[i] end
"""

SOAK_LUA = """local hot = {hot}
local variants = {variants}
local tail = {tail}
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) math.randomseed((id or 0) * 7919 + os.time()) end
local function r16() return math.random(0, 65535) end
function request()
    local draw, path = math.random(), nil
    if draw < {hot_share} then path = hot[math.random(#hot)]
    elseif draw < {hot_share} + {variant_share} then path = variants[math.random(#variants)]
    elseif draw < {hot_share} + {variant_share} + {tail_share} then path = tail[math.random(#tail)]
    else path = string.format("/%04x%04x%04x%04x%04x%04x%04x%04x%04x%04x.jpg",
        r16(), r16(), r16(), r16(), r16(), r16(), r16(), r16(), r16(), r16()) end
    return wrk.format(nil, path)
end
"""


# --- the parts ---------------------------------------------------------------------------

def memory_mb(system: System) -> tuple[float, float, int]:
    rss, pss, count = tree_memory_kb(system.process.pid)
    return rss / 1024, pss / 1024, count


def part_memory_before(system: System) -> None:
    time.sleep(1.0)
    system.results["mem_before"] = memory_mb(system)


def warm(system: System, paths: list[str], origin_port: int, total_bytes: int) -> None:
    """Every URL twice; the second pass must not reach the origin."""
    ok, size = fetch_all(system.port, paths)
    if ok != len(paths) or size != total_bytes:
        raise RuntimeError(f"{system.name}: warm-up got {ok}/{len(paths)} answers 200, {size}/{total_bytes} bytes")
    before = origin_count(origin_port)
    fetch_all(system.port, paths)
    system.results["second_pass_origin"] = origin_count(origin_port) - before


def part_memory_after(system: System) -> None:
    time.sleep(1.0)
    system.results["mem_after"] = memory_mb(system)


def part_hits(system: System, script: Path, args: argparse.Namespace) -> None:
    url = f"http://127.0.0.1:{system.port}/"
    wrk(url, 2, args.connections, threads=2, script=script)  # warm-up, not reported
    system.results["hits"] = wrk(url, args.seconds, args.connections, threads=2, script=script)


def part_coldmiss(system: System, names: list[str], origin_port: int, args: argparse.Namespace) -> None:
    rounds = []
    for name in names:
        own = burst(origin_port, f"/{name}.jpg", 1)[0]  # the origin's own latency for this image, asked directly
        before = origin_count(origin_port)
        waits = burst(system.port, f"/{name}.jpg", args.clients)
        rounds.append((name, origin_count(origin_port) - before, own, waits))
    system.results["coldmiss"] = rounds


def part_soak(system: System, script: Path, args: argparse.Namespace) -> None:
    command = wrk_command(f"http://127.0.0.1:{system.port}/", args.soak_seconds, args.connections, 2, script)
    samples = [memory_mb(system)[0]]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None and time.monotonic() - started < args.soak_seconds + 30:
                time.sleep(args.sample_seconds)
                samples.append(memory_mb(system)[0])
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        out.seek(0)
        output = out.read()
    time.sleep(1.0)
    rss, pss, procs = memory_mb(system)
    samples.append(rss)
    if process.returncode != 0:
        raise RuntimeError(f"{system.name}: soak wrk exited {process.returncode}: {output[-400:]}")
    system.results["soak"] = {"wrk": parse_wrk(output), "start": samples[0], "max": max(samples), "end": samples[-1],
                              "samples": len(samples), "pss_end": pss, "procs": procs}


def run_system(name: str, tmp: Path, ctx: dict, args: argparse.Namespace) -> System:
    options = {"workers": args.workers, "render_mode": args.render_mode} if name == "edgeproxy" else {}
    system = STARTERS[name](tmp / name, ctx["origin_port"], args.budget_mb, **options)
    try:
        wait_for_port(system.port, 60, system.process)
        time.sleep(0.5)
        part_memory_before(system)
        warm(system, ctx["warm_paths"], ctx["origin_port"], ctx["warm_bytes"])
        part_memory_after(system)
        if "hits" in args.only:
            progress(f"{name}: hits")
            part_hits(system, ctx["rotate_lua"], args)
        if "coldmiss" in args.only:
            progress(f"{name}: cold miss")
            part_coldmiss(system, ctx["cold_names"], ctx["origin_port"], args)
        if "soak" in args.only:
            progress(f"{name}: soak, {args.soak_seconds:g} s")
            part_soak(system, ctx["soak_lua"][name], args)
    except Abort:
        raise
    except Exception as error:
        system.results["error"] = f"{type(error).__name__}: {error}\n{log_tail(system.log)}"
        progress(f"{name} failed: {system.results['error']}")
    finally:
        stop_tree(system.process)
    return system


# --- output ------------------------------------------------------------------------------

def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def versions() -> list[str]:
    lines = []
    for command in (["varnishd", "-V"], ["nginx", "-v"], ["wrk", "--version"]):
        if shutil.which(command[0]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            lines.append((done.stdout + done.stderr).strip().splitlines()[0])
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines.append(f"edgeproxy {commit or '(no git)'}, pyvips {pyvips.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    return lines


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def print_hits(systems: list[System], args: argparse.Namespace, ctx: dict) -> None:
    print(f"\n## hits: wrk -t2 -c{args.connections} -d{args.seconds:g}s --latency, Lua rotating over all "
          f"{len(ctx['warm_paths'])} cached URLs (one after another, same machine)")
    print(f"{'system':<11}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    rows = {s.name: s.results["hits"] for s in systems if "hits" in s.results}
    for name, r in rows.items():
        print(f"{name:<11}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8.0f}")
    for name, r in rows.items():
        if r["errors"]:
            print(f"  {name} errors: non-2xx {r['non_2xx']:.0f}, socket errors: {r['socket_detail'] or 'none'}")
    ours = rows.get("edgeproxy")
    for peer in ("varnish", "nginx"):
        if ours and peer in rows:
            theirs = rows[peer]
            print(f"edgeproxy/{peer}: req/s {ratio(ours['rps'], theirs['rps'])}, p99 {ratio(ours['p99'], theirs['p99'])}"
                  + ("   (goal vs varnish: req/s >= 0.80x, p99 <= 2.00x)" if peer == "varnish" else ""))


def print_coldmiss(systems: list[System], args: argparse.Namespace) -> None:
    print(f"\n## cold miss: {args.clients} clients (h2load --h1) ask for one never-asked image at once, "
          f"origin delay {args.delay_ms:g} ms, {args.rounds} round(s), a new image each")
    print(f"{'system':<11}{'image':<10}{'origin reqs':>12}{'origin ms':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p50-origin':>12}")
    for system in systems:
        for name, requests, own, waits in system.results.get("coldmiss", []):
            p50, p99, own = statistics.median(waits) * 1000, percentile(waits, 0.99) * 1000, own * 1000
            print(f"{system.name:<11}{name[:8]:<10}{requests:>12}{own:>10.1f}{p50:>9.1f}{p99:>9.1f}{waits[-1] * 1000:>9.1f}{p50 - own:>12.1f}")
    print("origin ms: one GET of the same image straight from the origin, just before the burst (not counted in origin reqs)")
    print("goal: 1 origin request, p50 within 5 ms of the origin's own latency")


def print_memory(systems: list[System], ctx: dict) -> None:
    cached = ctx["warm_bytes"]
    print(f"\n## memory per cached byte: {len(ctx['warm_paths'])} images, {cached / MB:.1f} MiB cached "
          "(RSS = sum of VmRSS over the process and its children; PSS splits shared pages)")
    print(f"{'system':<11}{'procs':>6}{'RSS before':>11}{'RSS after':>10}{'RSS/byte':>9}{'PSS before':>11}"
          f"{'PSS after':>10}{'PSS/byte':>9}{'2nd pass origin reqs':>22}")
    for system in systems:
        if "mem_after" not in system.results:
            continue
        (rss0, pss0, _), (rss1, pss1, procs) = system.results["mem_before"], system.results["mem_after"]
        print(f"{system.name:<11}{procs:>6}{rss0:>9.1f}MB{rss1:>8.1f}MB{(rss1 - rss0) * MB / cached:>9.2f}"
              f"{pss0:>9.1f}MB{pss1:>8.1f}MB{(pss1 - pss0) * MB / cached:>9.2f}{system.results['second_pass_origin']:>22}")


def print_soak(systems: list[System], args: argparse.Namespace, ctx: dict) -> None:
    limit = 1.2 * args.budget_mb + 60
    print(f"\n## soak: wrk -t2 -c{args.connections} -d{args.soak_seconds:g}s per system, mix {HOT_SHARE:.0%} a hot set of "
          f"{len(ctx['hot_paths'])} images, {VARIANT_SHARE:.0%} /{{hash}}/thumb.jpg of all {len(ctx['warm_paths'])} "
          f"(peers: the same originals), {TAIL_SHARE:.0%} a tail of {len(ctx['tail'])} other images "
          f"({sum(size for _, size in ctx['tail']) / MB:.0f} MiB), {1 - HOT_SHARE - VARIANT_SHARE - TAIL_SHARE:.0%} "
          "never-seen names (404 at the origin); "
          f"RSS sampled every {args.sample_seconds:g} s")
    print(f"{'system':<11}{'budget':>8}{'RSS start':>10}{'RSS max':>9}{'RSS end':>9}{'goal':>9}{'met (end/max)':>15}"
          f"{'PSS end':>9}{'procs':>6}{'req/s':>9}{'p99 ms':>8}{'non-2xx':>9}{'sock err':>9}")
    for system in systems:
        soak = system.results.get("soak")
        if not soak:
            continue
        r = soak["wrk"]
        met = f"{'yes' if soak['end'] <= limit else 'NO'}/{'yes' if soak['max'] <= limit else 'NO'}"
        print(f"{system.name:<11}{args.budget_mb:>6}MB{soak['start']:>8.1f}MB{soak['max']:>7.1f}MB{soak['end']:>7.1f}MB"
              f"{limit:>7.0f}MB{met:>15}{soak['pss_end']:>7.1f}MB{soak['procs']:>6}"
              f"{r['rps']:>9.0f}{r['p99']:>8.2f}{r['non_2xx']:>9.0f}{r['socket_errors']:>9.0f}")
    for system in systems:
        if system.results.get("soak", {}).get("wrk", {}).get("socket_errors"):
            print(f"  {system.name} socket errors: {system.results['soak']['wrk']['socket_detail']}")
    print(f"goal: RSS <= 1.2 x budget + 60 MB = {limit:.0f} MB (RSS summed over a system's processes counts the pages"
          " they share once each; PSS splits them); non-2xx are the never-seen names' 404s")


# --- main --------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=10, help="length of each wrk hit run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--images", type=int, default=300, help="cached image set")
    parser.add_argument("--budget-mb", type=int, default=64, help="memory budget of each cache (MiB)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the origin's fixed delay")
    parser.add_argument("--clients", type=int, default=100, help="cold-miss clients")
    parser.add_argument("--rounds", type=int, default=5, help="cold-miss rounds, a new image each")
    parser.add_argument("--soak-seconds", type=float, default=600, help="length of the mixed run, per system")
    parser.add_argument("--sample-seconds", type=float, default=3, help="RSS sampling period in the soak")
    parser.add_argument("--hot", type=int, default=30, help="images in the soak's hot set")
    parser.add_argument("--soak-tail", type=int, default=0, help="images in the soak's tail (default: twice the budget)")
    parser.add_argument("--workers", type=int, default=0, help="edgeproxy's --workers (default: the CPU count)")
    parser.add_argument("--render-mode", choices=("threads", "processes"), default="", help="edgeproxy's [resize] render_mode")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated: {','.join(SYSTEMS)}")
    args = parser.parse_args()
    args.only, args.systems = args.only.split(","), args.systems.split(",")
    for chosen, allowed, flag in ((args.only, PARTS, "--only"), (args.systems, SYSTEMS, "--systems")):
        if not chosen or set(chosen) - set(allowed):
            parser.error(f"{flag} takes a comma-separated subset of {','.join(allowed)}")
    return args


def check_packages(args: argparse.Namespace) -> None:
    needed = [PACKAGES[s] for s in args.systems if s in PACKAGES]
    if {"hits", "soak"} & set(args.only):
        needed.append(("wrk", "wrk"))
    if "coldmiss" in args.only:
        needed.append(("h2load", "nghttp2-client"))
    missing = [package for executable, package in needed if shutil.which(executable) is None]
    if missing:
        print(f"missing Debian packages; install them with:\n    apt-get install -y {' '.join(missing)}", file=sys.stderr)
        sys.exit(2)


def prepare(tmp: Path, args: argparse.Namespace) -> dict:
    progress(f"generating {args.images + args.rounds} images")
    images = generate(tmp / "images", args.images + args.rounds)
    cached, cold = images[: args.images], images[args.images:]
    ctx = {
        "images": cached,
        "warm_paths": [f"/{name}.jpg" for name, _ in cached],
        "warm_bytes": sum(size for _, size in cached),
        "cold_names": [name for name, _ in cold],
        "hot_paths": [f"/{name}.jpg" for name, _ in cached[: args.hot]],
    }
    ctx["rotate_lua"] = tmp / "rotate.lua"
    ctx["rotate_lua"].write_text(ROTATE_LUA.format(paths=lua_list(ctx["warm_paths"])))
    ctx["soak_lua"], ctx["tail"] = {}, []
    if "soak" in args.only:
        median = sorted(size for _, size in cached)[len(cached) // 2]
        count = args.soak_tail or 2 * args.budget_mb * MB // median
        progress(f"generating the soak's tail of {count} images")
        ctx["tail"] = generate(tmp / "images", count, first=len(images))
    tail = lua_list([f"/{name}.jpg" for name, _ in ctx["tail"]])
    for name in SYSTEMS:
        variants = [f"/{n}/thumb.jpg" if name == "edgeproxy" else f"/{n}.jpg" for n, _ in cached]
        path = tmp / f"soak-{name}.lua"
        path.write_text(SOAK_LUA.format(hot=lua_list(ctx["hot_paths"]), variants=lua_list(variants), tail=tail,
                                        hot_share=HOT_SHARE, variant_share=VARIANT_SHARE, tail_share=TAIL_SHARE))
        ctx["soak_lua"][name] = path
    return ctx


def report(systems: list[System], args: argparse.Namespace, ctx: dict, started: float) -> None:
    sizes = sorted(size for _, size in ctx["images"])
    print("# edgeproxy vs Varnish vs nginx, one run, 127.0.0.1")
    for line in versions():
        print(line)
    print(f"image set: {len(sizes)} JPEGs, {sizes[0] / 1000:.1f}-{sizes[-1] / 1000:.1f} KB (median {sizes[len(sizes) // 2] / 1000:.1f} KB), "
          f"origin delay {args.delay_ms:g} ms, memory budget {args.budget_mb} MiB each")
    for system in systems:
        print(f"{system.name}: {system.note}")
    if "hits" in args.only:
        print_hits(systems, args, ctx)
    if "coldmiss" in args.only:
        print_coldmiss(systems, args)
    if "memory" in args.only:
        print_memory(systems, ctx)
    if "soak" in args.only:
        print_soak(systems, args, ctx)
    for system in systems:
        if "error" in system.results:
            print(f"\n{system.name} FAILED: {system.results['error']}")
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average (1 min) {ctx['load_start']:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} CPUs shared with whatever else runs here")


def main() -> None:
    args = parse_args()
    check_packages(args)
    abort_on_signals(signal.SIGTERM, signal.SIGHUP)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    systems: list[System] = []
    with tempfile.TemporaryDirectory(prefix="edgeproxy-peers-") as tmp_name:
        tmp = Path(tmp_name)
        ctx = prepare(tmp, args)
        ctx["load_start"] = load_start
        ctx["origin_port"] = free_port()
        origin = start_slow_origin(ctx["origin_port"], args.delay_ms, [tmp / "images"])
        try:
            wait_for_port(ctx["origin_port"], 30, origin)
            for name in args.systems:
                progress(f"{name}: start, warm")
                systems.append(run_system(name, tmp, ctx, args))
        finally:
            stop_tree(origin)
    report(systems, args, ctx, started)
    if any("error" in s.results for s in systems):
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Abort) as stopped:
        sys.exit(f"interrupted ({stopped or 'Ctrl-C'}); every process started was stopped")
