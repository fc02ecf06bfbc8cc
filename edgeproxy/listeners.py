"""
Listening ports opened as twistd builds the service tree, not once it starts: a port
that cannot be opened (in use, not allowed) then stops start-up like a wrong config,
with one line naming file, section and key, and exit status 2. Twisted's
StreamServerEndpointService only logs such a failure and lets the process run on
without the port: a proxy whose /healthz said 200 with no public listener.
"""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from edgeproxy.config import ConfigError


class ListeningPort(Service):
    """A port already listening; it closes when the service stops."""

    def __init__(self, port: IListeningPort):
        self.port = port

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return maybeDeferred(self.port.stopListening)


def listen(reactor: object, where: str, descriptions: tuple[str, ...], factory: Factory, parent: MultiService) -> None:
    """Each endpoint opened now, as a child of `parent`; `where` names the key they come from (`PATH: [edge] listen`)."""
    for description in descriptions:
        ListeningPort(open_port(reactor, where, description, factory)).setServiceParent(parent)


def open_port(reactor: object, where: str, description: str, factory: Factory) -> IListeningPort:
    """
    Twisted's stream server endpoints (tcp, ssl, unix, systemd) listen at once: their
    Deferred has fired when listen() returns, so the port, or why not, is known here.
    """
    opened: list[IListeningPort | Failure] = []
    serverFromString(reactor, description).listen(factory).addBoth(opened.append)
    if not opened:
        raise ConfigError(f"{where}: {description!r} does not listen at once")
    if isinstance(opened[0], Failure):
        raise cannot_listen(where, description, opened[0].value)
    return opened[0]


def cannot_listen(where: str, description: str, error: BaseException) -> ConfigError:
    """One line: the key, the endpoint and the system's reason (a CannotListenError carries it as socketError)."""
    reason = getattr(error, "socketError", error)
    return ConfigError(f"{where}: {description!r} cannot listen: {getattr(reason, 'strerror', None) or reason}")
