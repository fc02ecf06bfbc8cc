"""
An image server for benchmarks that answers after a fixed delay and counts what it
is asked. Usage: python bench/slow_origin.py PORT DELAY_MS FILE_OR_FOLDER...
Serves each file (every file of a folder) at /{its name}, unknown names 404 after the
same delay. GET /count answers the number of image requests so far.
"""

import os
import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


class SlowResource(Resource):
    isLeaf = True

    def __init__(self, files: dict[bytes, bytes], delay: float):
        super().__init__()
        self.files = files
        self.delay = delay
        self.count = 0

    def render_GET(self, request):
        if request.path == b"/count":
            return b"%d\n" % self.count
        self.count += 1
        call = reactor.callLater(self.delay, self._answer, request)
        request.notifyFinish().addErrback(lambda failure: call.active() and call.cancel())
        return NOT_DONE_YET

    def _answer(self, request) -> None:
        body = self.files.get(request.path)
        if body is None:
            request.setResponseCode(404)
            body = b"not found\n"
        else:
            request.setHeader(b"Content-Type", b"image/jpeg")
        request.write(body)
        request.finish()


def expand(paths: list[str]) -> list[str]:
    """Files as given, folders replaced by the files in them."""
    found = []
    for path in paths:
        found += [os.path.join(path, name) for name in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
    return found


def main() -> None:
    port, delay, paths = int(sys.argv[1]), float(sys.argv[2]) / 1000, sys.argv[3:]
    files = {b"/" + os.path.basename(p).encode(): open(p, "rb").read() for p in expand(paths)}
    site = Site(SlowResource(files, delay))
    site.log = lambda request: None
    reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
