"""
The baseline for the hit path: a minimal twisted.web server answering every path
from a dict of bytes. Usage: python bench/dictserver.py PORT FILE...
"""

import os
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site


class DictResource(Resource):
    isLeaf = True

    def __init__(self, files: dict[bytes, bytes]):
        super().__init__()
        self.files = files

    def render_GET(self, request):
        body = self.files.get(request.path)
        if body is None:
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"Content-Type", b"image/jpeg")
        return body


def main() -> None:
    port, paths = int(sys.argv[1]), sys.argv[2:]
    files = {b"/" + os.path.basename(p).encode(): open(p, "rb").read() for p in paths}
    site = Site(DictResource(files))
    site.log = lambda request: None
    reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
