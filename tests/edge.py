"""An in-process edgeproxy built from a real config, listening on 127.0.0.1 port 0."""

from __future__ import annotations

from pathlib import Path

import treq
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import deferLater

from edgeproxy.config import load_config
from edgeproxy.tap import build_edge
from tests.configs import write_config


class Edge:
    def __init__(self, tmp_path: Path, changes: dict | None = None, tokenmap: str | None = None):
        if tokenmap is not None:
            (tmp_path / "map.ini").write_text(tokenmap)
            changes = {("origins", "chain"): "shards", ("shards", "tokenmap"): str(tmp_path / "map.ini"), **(changes or {})}
        self.config = load_config(write_config(tmp_path, changes))
        self.services = MultiService()
        self.parts = build_edge(self.config, reactor, self.services)
        self.site = self.parts.site
        self.services.startService()
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1", backlog=1024)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def get(self, path: str, method: str = "GET", headers: dict | None = None):
        """Waits for the disk index first, so a test's first miss is spilled like every later one."""
        disk = self.site.handler.images.disk
        while not disk.ready:
            await deferLater(reactor, 0.005, lambda: None)
        return await treq.request(method, self.base + path, headers=headers, persistent=False)

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.services.stopService()


def pair_map(*backends) -> str:
    return "[tokenmap]\nffff = " + " ".join(b.address for b in backends) + "\n"
