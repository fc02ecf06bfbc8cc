"""
HTTPS for the public listeners: TLS 1.2 minimum with forward-secret AEAD ciphers,
several certificate chains chosen by SNI (from each certificate's DNS names), and
HTTP/2 or HTTP/1.1 chosen by ALPN. Twisted's `ssl:` endpoint does neither SNI nor
ALPN, so the TLS layer is built here with pyOpenSSL and wrapped around a plain TCP
endpoint. A client speaking plain HTTP to it fails the handshake and is closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

# Mozilla's "intermediate" list: ECDHE only (forward secrecy), AES-GCM and ChaCha20.
CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
PROTOCOLS = (b"h2", b"http/1.1")


class CertificateError(ValueError):
    """A certificate pair that cannot be served; str() is one line."""


@dataclass(frozen=True)
class CertificatePair:
    chain: str  # PEM: the leaf first, then its intermediates
    key: str


class SNIServerContexts:
    """One SSL context per certificate; the first is served to clients that send no known name."""

    def __init__(self, pairs: Sequence[CertificatePair]):
        if not pairs:
            raise CertificateError("no certificate configured")
        self._contexts = [_context(pair) for pair in pairs]
        self.names: dict[str, SSL.Context] = {}
        for pair, context in zip(pairs, self._contexts):
            for name in _dns_names(pair.chain):
                self.names.setdefault(name, context)
        self._contexts[0].set_tlsext_servername_callback(self._choose)

    @property
    def default(self) -> SSL.Context:
        return self._contexts[0]

    def context_for(self, server_name: str) -> SSL.Context:
        name = server_name.lower().rstrip(".")
        exact = self.names.get(name)
        if exact is not None:
            return exact
        wildcard = self.names.get("*." + name.partition(".")[2])
        return wildcard if wildcard is not None else self.default

    def _choose(self, connection: SSL.Connection) -> None:
        server_name = connection.get_servername()
        if server_name:
            connection.set_context(self.context_for(server_name.decode("ascii", "replace")))


@implementer(IOpenSSLServerConnectionCreator)
class _ConnectionCreator:
    def __init__(self, contexts: SNIServerContexts):
        self._contexts = contexts

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self._contexts.default, None)


class _RefusingTLSFactory(TLSMemoryBIOFactory):
    """
    A connection the HTTP factory refuses (past max_connections) is closed at once, as on
    plain TCP: TLSMemoryBIOFactory wrapped the None, failed in makeConnection and left
    the socket open until the client left.
    """

    def buildProtocol(self, addr: object) -> Protocol | None:
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


def tls_factory(contexts: SNIServerContexts, site: Factory) -> TLSMemoryBIOFactory:
    """Wrap the HTTP factory, which picks HTTP/2 or HTTP/1.1 by what ALPN chose."""
    return _RefusingTLSFactory(_ConnectionCreator(contexts), False, site)


def _context(pair: CertificatePair) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(CIPHERS)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
    try:
        context.use_certificate_chain_file(pair.chain)
        context.use_privatekey_file(pair.key)
        context.check_privatekey()
    except SSL.Error as error:
        raise CertificateError(f"{pair.chain} with {pair.key}: {_reason(error)}") from None
    context.set_alpn_select_callback(_select_protocol)
    return context


def _select_protocol(connection: SSL.Connection, offered: list[bytes]) -> bytes | object:
    """h2 when the client offers it, else HTTP/1.1; no ALPN answer if it offers neither."""
    for protocol in PROTOCOLS:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _dns_names(chain: str) -> list[str]:
    """The names the leaf certificate is valid for: its DNS SANs, else its common name."""
    with open(chain, "rb") as handle:
        leaf = x509.load_pem_x509_certificate(handle.read())
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [attribute.value for attribute in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [str(name).lower() for name in names]


def _reason(error: SSL.Error) -> str:
    details = error.args[0] if error.args and isinstance(error.args[0], list) else []
    return details[-1][2] if details else str(error)
