"""
The three caches bench/peers.py compares, each started on its own 127.0.0.1 port in a
folder of its own in front of one origin: edgeproxy (`twistd -n edgeproxy`), Varnish
(`varnishd -F`, malloc storage) and nginx (`proxy_cache` with `proxy_cache_lock`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, TWISTD, free_port, start_edgeproxy  # noqa: E402


@dataclass
class System:
    name: str
    process: subprocess.Popen
    port: int
    log: Path
    note: str
    results: dict = field(default_factory=dict)


def edgeproxy_workers_option() -> bool:
    help_text = subprocess.run([TWISTD, "edgeproxy", "--help"], capture_output=True, text=True, timeout=60,
                               cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))).stdout
    return "--workers" in help_text


def start_edgeproxy_system(workdir: Path, origin_port: int, budget_mb: int, workers: int = 0, render_mode: str = "") -> System:
    """`workers` 0 is the CPU count; `render_mode` empty keeps the bundled config's."""
    workdir.mkdir()
    # One pair, both members the same origin; the token map refuses the same host:port
    # twice, so the secondary is named `localhost` (127.0.0.1 in /etc/hosts here).
    (workdir / "map.ini").write_text(f"[tokenmap]\nffff = 127.0.0.1:{origin_port} localhost:{origin_port}\n")
    changes = {
        "chain = local": "chain = shards",
        "tokenmap = tokenmap.ini": f"tokenmap = {workdir / 'map.ini'}",
        "memory_bytes = 256MiB": f"memory_bytes = {budget_mb}MiB",
    }
    if render_mode:
        changes["render_mode = processes"] = f"render_mode = {render_mode}"
    cpus = workers or os.cpu_count() or 1
    if edgeproxy_workers_option():
        extra, note = ["--workers", str(cpus)], f"--workers {cpus}"
    else:
        extra, note = [], "one process (this checkout's `twistd edgeproxy` has no --workers)"
    port = free_port()
    process = start_edgeproxy(port, workdir, changes, extra)
    mode = render_mode or "as bundled (processes)"
    return System("edgeproxy", process, port, workdir / "twistd.log", f"{note}, render_mode {mode}, memory_bytes = {budget_mb} MiB, "
                  f"token map ffff = 127.0.0.1:{origin_port} localhost:{origin_port}")


VCL = """vcl 4.1;
backend origin {{ .host = "127.0.0.1"; .port = "{origin_port}"; }}
sub vcl_hash {{ hash_data(req.url); return (lookup); }}
sub vcl_backend_response {{
    if (beresp.status == 200) {{ set beresp.ttl = 1y; }} else {{ set beresp.ttl = 60s; }}
    set beresp.grace = 0s;
}}
"""


def start_varnish(workdir: Path, origin_port: int, budget_mb: int) -> System:
    """varnishd in the foreground with its own -n folder (no clash with a system
    instance), no jail (so every process stays ours to stop), malloc storage."""
    workdir.mkdir()
    (workdir / "default.vcl").write_text(VCL.format(origin_port=origin_port))
    port = free_port()
    log = workdir / "varnishd.log"
    command = ["varnishd", "-F", "-j", "none", "-n", str(workdir / "instance"), "-a", f"127.0.0.1:{port}",
               "-f", str(workdir / "default.vcl"), "-s", f"malloc,{budget_mb}M"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return System("varnish", process, port, log, f"-s malloc,{budget_mb}M, TTL 1y (404: 60 s), hash on URL")


NGINX_CONF = """worker_processes {workers};
{user}pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=images:16m max_size={budget_mb}m inactive=1y use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache images;
            proxy_cache_key $uri;
            proxy_cache_lock on;
            proxy_cache_valid 200 1y;
            proxy_cache_valid 404 1m;
        }}
    }}
}}
"""


def start_nginx(workdir: Path, origin_port: int, budget_mb: int) -> System:
    workdir.mkdir()
    port = free_port()
    workers = os.cpu_count() or 1
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp folder
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, user=user, prefix=workdir, budget_mb=budget_mb,
                                      origin_port=origin_port, port=port))
    log = workdir / "stderr.log"
    command = ["nginx", "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log"), "-g", "daemon off;"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    note = (f"worker_processes {workers}, proxy_cache max_size={budget_mb}m keys_zone 16m, cache_lock on "
            "(bodies in files: the page cache holds them, not RSS)")
    return System("nginx", process, port, workdir / "error.log", note)


STARTERS = {"edgeproxy": start_edgeproxy_system, "varnish": start_varnish, "nginx": start_nginx}
