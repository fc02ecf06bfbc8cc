"""
What the supervisor and its worker processes say to each other, over AMP on a unix
socket pair (the worker's file descriptor 3).

Workers ask the supervisor, the single owner of the disk index, before they write an
entry (`Reserve`) and tell it when the file is in place (`Written`), when they read
one (`Touch`, a hit for the eviction policy) and when they found one corrupt
(`Forget`); before they fetch an original they claim it (`Claim`), hear whether
another worker waits on it (`Wanted`), and say how the fetch went (`Release`), so that
one worker fetches it for all (edgeproxy.claims). The supervisor asks workers for their counters and metrics (`Snapshot`),
to purge an image (`Purge`) and to reload what can change live (`Reload`).
"""

from __future__ import annotations

from twisted.internet.interfaces import ITransport
from twisted.protocols import amp

from edgeproxy.promptwrite import PromptWriter

CHANNEL_FD = 3
FIRST_LISTENER_FD = 4
_CHUNK = 0xFFFF


class BigBytes(amp.Argument):
    """Bytes of any length, split over as many AMP values (each at most 64 KiB) as it takes."""

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: object) -> None:
        value = objects.get(name.decode())
        if value is None and self.optional:
            return
        chunks = [value[i : i + _CHUNK] for i in range(0, len(value), _CHUNK)]
        strings[name] = b"%d" % len(chunks)
        for index, chunk in enumerate(chunks):
            strings[b"%s.%d" % (name, index)] = chunk

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: object) -> None:
        if name not in strings and self.optional:
            objects[name.decode()] = None
            return
        count = int(strings[name])
        objects[name.decode()] = b"".join(strings[b"%s.%d" % (name, index)] for index in range(count))


class PromptAMP(amp.AMP):
    """AMP whose boxes leave at once (edgeproxy.promptwrite): each is a step some cold miss waits on."""

    def makeConnection(self, transport: ITransport) -> None:
        self.writer = PromptWriter(transport)
        super().makeConnection(transport)

    def sendBox(self, box: amp.AmpBox) -> None:
        if self._locked or self.transport is None or self._startingTLSBuffer is not None:
            return super().sendBox(box)
        self.writer.write(box.serialize())


class Reserve(amp.Command):
    """May I write this entry? The answer says whether to write it: it is then indexed."""

    arguments = [(b"key", amp.String()), (b"size", amp.Integer())]
    response = [(b"write", amp.Boolean())]


class Written(amp.Command):
    """The reserved entry is in place (ok) or could not be written."""

    arguments = [(b"key", amp.String()), (b"ok", amp.Boolean())]
    requiresAnswer = False


class Touch(amp.Command):
    """An entry was read from disk."""

    arguments = [(b"key", amp.String())]
    requiresAnswer = False


class Forget(amp.Command):
    """An entry did not verify and was deleted, or its file was gone."""

    arguments = [(b"key", amp.String())]
    requiresAnswer = False


class Claim(amp.Command):
    """
    May I fetch this original? `stored` (it is on disk: read it), `fetch`, or, once the
    worker fetching it is done, `fetched` (with its bytes), `disk` or `absent`.
    """

    arguments = [(b"key", amp.String())]
    response = [(b"outcome", amp.Unicode()), (b"body", BigBytes(optional=True))]


class Release(amp.Command):
    """My fetch of a claimed original is over: here it is (`fetched`), it is on disk, absent, or neither (`fetch`)."""

    arguments = [(b"key", amp.String()), (b"outcome", amp.Unicode()), (b"body", BigBytes(optional=True))]
    requiresAnswer = False


class Wanted(amp.Command):
    """(To a worker) another worker waits on your claim of this key: release it with its bytes."""

    arguments = [(b"key", amp.String())]
    requiresAnswer = False


class Render(amp.Command):
    """
    (To the supervisor) render this variant of an original in your render processes:
    the bytes, or why the original cannot be made into it.
    """

    arguments = [(b"source", BigBytes()), (b"width", amp.Integer()), (b"height", amp.Integer()), (b"fit", amp.Unicode()),
                 (b"fmt", amp.Unicode())]
    response = [(b"body", BigBytes(optional=True)), (b"unrenderable", amp.Unicode(optional=True))]


class Snapshot(amp.Command):
    """The worker's Prometheus text (empty unless asked for) and, as JSON, what the status page shows."""

    arguments = [(b"with_metrics", amp.Boolean())]
    response = [(b"metrics", BigBytes()), (b"status", BigBytes())]


class Purge(amp.Command):
    """Drop an image from the worker's memory tier and negative cache; JSON list of the keys removed."""

    arguments = [(b"image_hash", amp.Unicode())]
    response = [(b"removed", BigBytes())]


class Reload(amp.Command):
    """
    (To a worker) the supervisor got SIGHUP: reload what can change live. A message, not
    a signal: a worker still starting reads it once it is up, where SIGHUP would kill it.
    """

    requiresAnswer = False
