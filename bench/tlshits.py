"""
The memory-hit path over TLS next to plain HTTP, in one run of one real
`twistd -n edgeproxy`: wrk over http:// and https:// (HTTP/1.1, one request at a time
per connection as browsers send them, and 16 pipelined as wrk's pipeline.lua does),
and h2load over https:// with ALPN h2 (one stream per connection, as a browser's image
requests are spread), each on the same cached image. Prints req/s and latency with the ratios to
plain HTTP. The certificates come from a throwaway CA made for the run.

    python bench/tlshits.py [--seconds 10] [--connections 64]

Needs Debian's wrk and nghttp2-client (h2load). Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SAMPLE, free_port, start_edgeproxy, stop, wait_until_serving, wrk  # noqa: E402

sys.path.insert(0, str(REPO))
from tests.tlscerts import LoopbackCA  # noqa: E402


def h2load(url: str, seconds: float, connections: int) -> dict:
    command = ["h2load", "-c", str(connections), "-m", "1", "-D", f"{seconds:g}", url]  # :authority from the URL
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", output)[1])
    mean, unit = re.search(r"time for request:\s+\S+\s+\S+\s+([0-9.]+)(us|ms|s)", output).groups()
    failed = int(re.search(r"(\d+) failed", output)[1])
    protocol = re.search(r"Application protocol: (\S+)", output)[1]
    return {"rps": rps, "mean": float(mean) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], "errors": failed, "protocol": protocol}


PIPELINE_LUA = """init = function(args)
  local r = {{}}
  for i = 1, {depth} do r[i] = wrk.format(nil, "/{path}") end
  req = table.concat(r)
end
request = function() return req end
"""
PIPELINE_DEPTH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    if missing:
        print(f"missing {' '.join(missing)}: apt-get install -y wrk nghttp2-client", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        chain, key = LoopbackCA(workdir).issue("localhost", "localhost")
        port, tls_port = free_port(), free_port()
        tls = f"[tls]\nlisten = tcp:{tls_port}:interface=127.0.0.1:backlog=1024\ncertificates = {chain}:{key}\n\n[cache]"
        process = start_edgeproxy(port, workdir, {"[cache]": tls})
        pipeline = workdir / "pipeline.lua"
        pipeline.write_text(PIPELINE_LUA.format(depth=PIPELINE_DEPTH, path=SAMPLE))
        try:
            plain, secure = f"http://127.0.0.1:{port}/{SAMPLE}", f"https://localhost:{tls_port}/{SAMPLE}"  # SNI localhost
            wait_until_serving(plain)
            wrk(plain, 2, args.connections)  # the miss, and a warm-up; not reported
            rows = {
                "http/1.1": wrk(plain, args.seconds, args.connections),
                "https http/1.1": wrk(secure, args.seconds, args.connections),
                f"https pipel. {PIPELINE_DEPTH}": wrk(secure, args.seconds, args.connections, script=pipeline),
                "https h2": h2load(secure, args.seconds, args.connections),
            }
        finally:
            stop(process)
    print(f"hit path over TLS, {args.connections} connections, {args.seconds:g}s each, one {SAMPLE[:8]}… jpg of {(REPO / 'samples' / SAMPLE).stat().st_size} bytes")
    print(f"{'transport':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'errors':>8}  vs http/1.1")
    base = rows["http/1.1"]["rps"]
    for name, r in rows.items():
        p50, p99 = (f"{r['p50']:9.2f}", f"{r['p99']:9.2f}") if "p50" in r else (f"{'-':>9}", f"{'-':>9}")
        mean = f"{r['mean']:9.2f}" if "mean" in r else f"{'-':>9}"
        print(f"{name:<16}{r['rps']:9.0f}{p50}{p99}{mean}{r['errors']:8.0f}  {r['rps'] / base:.2f}x")
    if rows["https h2"]["protocol"] != "h2":
        print(f"h2load negotiated {rows['https h2']['protocol']}, not h2", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
