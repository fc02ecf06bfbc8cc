"""
The INI configuration, loaded into typed, validated objects. Every problem stops
start-up with one line that names the file, section, key and what is wrong, so
nothing ever starts half-configured.
"""

from __future__ import annotations

import configparser
import io
import os
import re
from dataclasses import dataclass
from typing import Callable, TypeVar

from twisted.internet.endpoints import serverFromString

from edgeproxy.eviction import POLICIES
from edgeproxy.http1 import ConnectionLimits
from edgeproxy.ini import IniError, parse_ini, read_text
from edgeproxy.origins import render_template
from edgeproxy.origins.health import HealthPolicy
from edgeproxy.origins.hedging import HedgePolicy
from edgeproxy.origins.http import trust_bundle
from edgeproxy.render import IDLE, LOW, saveable_formats
from edgeproxy.signing import MIN_KEY_BYTES
from edgeproxy.tls import CertificateError, CertificatePair, SNIServerContexts
from edgeproxy.tokenmap import TokenMap, TokenMapError, load_tokenmap
from edgeproxy.urls import Geometry, UrlGrammar, parse_geometry

T = TypeVar("T")
ORIGIN_KINDS = ("local", "shards", "s3")
S3_CREDENTIALS = ("chain", "static", "anonymous")
_REQUIRED = object()
_SIZE = re.compile(r"\s*([0-9]+)\s*(B|KiB|MiB|GiB|TiB)?\s*")
_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|min)?\s*")
_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "min": 60.0}
_TEMPLATE_FIELDS = re.compile(r"\{([^{}]*)\}")
_EXTENSION = re.compile(r"[a-z0-9]{1,8}")
TEMPLATE_NAMES = frozenset({"hash", "ext", "p2", "p4", "p6"})
_REGION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SIGNING_REGION = re.compile(r"[a-z0-9-]{1,32}")
_URL_SAFE = re.compile(r"[A-Za-z0-9/._~-]*")
_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.-]+(?::([0-9]{1,5}))?/?")


class ConfigError(Exception):
    """A configuration that must not be put in force; str() is the one line to print."""


@dataclass(frozen=True)
class EdgeConfig:
    listen: tuple[str, ...]
    admin_listen: tuple[str, ...]
    hostnames: frozenset[bytes]
    extensions: frozenset[str]
    drain_timeout: float
    limits: ConnectionLimits
    workers: int  # 0: the CPU count


@dataclass(frozen=True)
class LogConfig:
    access_log: str | None  # a path, "-" for standard output, None when off
    success_rate: float
    errors_per_minute: int


@dataclass(frozen=True)
class CacheConfig:
    memory_bytes: int
    max_object_bytes: int
    disk_path: str
    disk_bytes: int
    negative_ttl: float
    policy: str


@dataclass(frozen=True)
class OriginsConfig:
    chain: tuple[str, ...]
    timeout: float
    connect_timeout: float
    max_body_bytes: int
    connections_per_host: int
    verify_hash: bool
    ca_bundle: str | None
    deadline: float
    max_in_flight: int
    health: HealthPolicy
    hedge: HedgePolicy | None


@dataclass(frozen=True)
class LocalConfig:
    root: str
    path_template: str


@dataclass(frozen=True)
class ShardsConfig:
    tokenmap: TokenMap
    tokenmap_path: str
    previous: TokenMap | None
    previous_path: str | None
    path_template: str
    scheme: str


@dataclass(frozen=True)
class S3RegionConfig:
    """One S3 region: where the bucket is, how requests are signed, how keys are laid out."""

    name: str
    endpoint: str
    bucket: str
    region: str
    credentials: str
    access_key: str
    secret_key: str
    key_template: str


@dataclass(frozen=True)
class ResizeConfig:
    presets: dict[str, Geometry]
    allowed_sizes: frozenset[Geometry]
    max_dimension: int
    quality: int
    source_ext: str
    max_source_pixels: int
    render_workers: int
    render_mode: str
    render_priority: str
    max_source_frames: int
    upscale: bool
    background: tuple[int, int, int]
    render_queue: int
    tenant_share: float


@dataclass(frozen=True)
class TLSConfig:
    listen: tuple[str, ...]
    certificates: tuple[CertificatePair, ...]  # the first is the default for unknown names


@dataclass(frozen=True)
class SecurityConfig:
    keys: tuple[bytes, ...]  # the first signs; all are accepted (rotation)
    sign: str  # what needs a signature: explicit (sizes off the allow-list), all, none


@dataclass(frozen=True)
class Config:
    path: str
    text: str  # the file as read: a supervisor gives it to every worker it starts, whatever becomes of the file
    edge: EdgeConfig
    cache: CacheConfig
    origins: OriginsConfig
    local: LocalConfig | None
    shards: ShardsConfig | None
    resize: ResizeConfig
    security: SecurityConfig
    log: LogConfig
    tls: TLSConfig | None = None
    s3: tuple[S3RegionConfig, ...] = ()

    def url_grammar(self) -> UrlGrammar:
        return UrlGrammar(
            extensions=self.edge.extensions,
            formats=saveable_formats(),
            presets=self.resize.presets,
            allowed_sizes=self.resize.allowed_sizes,
            max_dimension=self.resize.max_dimension,
            source_ext=self.resize.source_ext,
        )


class _Section:
    """Typed access to one section; every failure names file, section and key."""

    def __init__(self, parser: configparser.ConfigParser, path: str, name: str):
        self._parser = parser
        self.path = path
        self.name = name

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{self.name}] {key}: {what}")

    def get(self, key: str, parse: Callable[[str], T], default: object = _REQUIRED) -> T:
        raw = self._parser.get(self.name, key, fallback=None)
        if raw is None or not raw.strip():
            if default is _REQUIRED:
                raise self.fail(key, "missing (required)")
            return default  # type: ignore[return-value]
        try:
            return parse(raw.strip())
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def file(self, key: str, default: object = _REQUIRED) -> str:
        """A path, relative to the config file's folder."""
        return self.get(key, lambda raw: os.path.join(os.path.dirname(self.path), raw), default)


def parse_size(raw: str) -> int:
    match = _SIZE.fullmatch(raw)
    if not match:
        raise ValueError(f"{raw!r} is not a size (e.g. 4096, 64KiB, 512MiB, 2GiB)")
    return int(match[1]) * _UNITS[match[2]]


def parse_duration(raw: str) -> float:
    match = _DURATION.fullmatch(raw)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{raw!r} is not a positive duration (e.g. 250ms, 10s, 2min)")
    return float(match[1]) * _SECONDS[match[2]]


def parse_count(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{raw!r} is not a whole number of at least 1")
    return int(raw)


def parse_share(raw: str) -> float:
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ValueError(f"{raw!r} is not a share between 0 (excluded) and 1")
    return share


def parse_colour(raw: str) -> tuple[int, int, int]:
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", raw):
        raise ValueError(f"{raw!r} is not a colour like #ffffff")
    return int(raw[1:3], 16), int(raw[3:5], 16), int(raw[5:7], 16)


def parse_bool(raw: str) -> bool:
    value = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}.get(raw.lower())
    if value is None:
        raise ValueError(f"{raw!r} is not yes or no")
    return value


def parse_endpoints(raw: str) -> tuple[str, ...]:
    """Whitespace-separated Twisted server endpoint strings, each checked by Twisted's parser."""
    from twisted.internet import reactor

    endpoints = tuple(raw.split())
    for description in endpoints:
        try:
            serverFromString(reactor, description)
        except Exception as exc:  # Twisted's parsers raise many types, pyOpenSSL its own
            if description.startswith("systemd:") and isinstance(exc, (IndexError, KeyError)):
                raise ValueError(_not_passed_by_systemd(description)) from None
            raise ValueError(f"{description!r} is not a server endpoint: {exc}") from None
    return endpoints


def _not_passed_by_systemd(description: str) -> str:
    """
    Twisted's words for a `systemd:` socket that is not there are `list index out of
    range` or the bare name: say which socket, what systemd passed, and where it comes from.
    """
    options = dict(part.partition("=")[::2] for part in description.split(":")[1:])
    wanted = f"named {options['name']!r}" if "name" in options else f"at index {options.get('index')}"
    seen = [f"{key}={os.environ[key]}" if key in os.environ else f"{key} unset" for key in ("LISTEN_FDS", "LISTEN_FDNAMES")]
    if os.environ.get("LISTEN_PID", str(os.getpid())) != str(os.getpid()):
        seen.append(f"LISTEN_PID={os.environ['LISTEN_PID']}, not this process")
    return (
        f"{description!r}: systemd passed no socket {wanted} ({', '.join(seen)}): "
        "start edgeproxy through its socket unit (systemd/edgeproxy.socket)"
    )


def parse_template(raw: str) -> str:
    """A storage layout; checked by rendering it, so a stray brace fails here, not per request."""
    names = set(_TEMPLATE_FIELDS.findall(raw))
    unknown = names - TEMPLATE_NAMES
    if unknown:
        raise ValueError(f"unknown field {{{sorted(unknown)[0]}}} (use {{hash}} {{ext}} {{p2}} {{p4}} {{p6}})")
    sample = "0123456789abcdef0123456789abcdef01234567"
    try:
        rendered = render_template(raw, sample, "jpg")
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"{raw!r} is not a valid template (unbalanced braces?)") from None
    if sample not in rendered:
        raise ValueError("the template must contain {hash}")
    return raw


def parse_region_names(raw: str) -> tuple[str, ...]:
    names = tuple(raw.split())
    for name in names:
        if not _REGION_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a region name (lowercase letters, digits, - and _)")
    if len(set(names)) != len(names):
        raise ValueError("a region is listed twice")
    return names


def parse_pattern(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not pattern.fullmatch(raw):
            raise ValueError(f"{raw!r} is not {what}")
        return raw

    return parse


def parse_endpoint_url(raw: str) -> str:
    """A scheme and a host, with an optional port and nothing after it."""
    match = _ENDPOINT.fullmatch(raw)
    if not match or int(match[1] or 0) > 65535:
        raise ValueError(f"{raw!r} is not an endpoint like https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000")
    return raw.rstrip("/")


def parse_key_template(raw: str) -> str:
    """Keys are sent as they are, unescaped, so the URL signed is exactly the URL sent."""
    template = parse_template(raw)
    literal = _TEMPLATE_FIELDS.sub("", template)
    if not _URL_SAFE.fullmatch(literal):
        raise ValueError(f"{raw!r} may only use letters, digits and / . _ ~ - besides its fields")
    if template.startswith("/"):
        raise ValueError(f"{raw!r} starts with /, an S3 key does not (the default is {{p6}}/{{hash}}.{{ext}})")
    return template


def parse_extensions(raw: str) -> frozenset[str]:
    extensions = frozenset(raw.split())
    for ext in extensions:
        if not _EXTENSION.fullmatch(ext):
            raise ValueError(f"{ext!r} is not a lowercase extension of 1 to 8 letters or digits")
    return extensions


def parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return raw

    return parse


def parse_words(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        words = tuple(raw.replace(",", " ").split())
        for word in words:
            if word not in choices:
                raise ValueError(f"{word!r} is not one of {', '.join(choices)}")
        return words

    return parse


def parse_presets(max_dimension: int) -> Callable[[str], dict[str, Geometry]]:
    def parse(raw: str) -> dict[str, Geometry]:
        presets = {}
        for item in raw.split():
            name, sep, size = item.partition("=")
            if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
                raise ValueError(f"{item!r} is not name=WxH[-fit] with a lowercase name")
            presets[name] = parse_geometry(size, max_dimension)
        return presets

    return parse


def load_config(path: str, inherited_listeners: bool = False, text: str | None = None) -> Config:
    """
    Read and validate the whole file; raises ConfigError with one line. A worker
    process (`inherited_listeners`) serves sockets its supervisor opened from the
    public endpoints (checked there): it does not parse them again, since a `systemd:`
    endpoint only parses in the process systemd handed the sockets to. `text` is the
    file's content read before (by the supervisor, at its start), checked instead of
    the file: it is still named `path`, its relative paths resolved from there.
    """
    parser, text = _read(path, text)
    origins = _origins(_Section(parser, path, "origins"))
    listen = (lambda raw: tuple(raw.split())) if inherited_listeners else parse_endpoints
    edge = _edge(_Section(parser, path, "edge"), listen)
    resize = _resize(_Section(parser, path, "resize"))
    if resize.source_ext not in edge.extensions:
        raise _Section(parser, path, "resize").fail("source_ext", f"{resize.source_ext!r} is not in [edge] extensions")
    return Config(
        path=path,
        text=text,
        edge=edge,
        cache=_cache(_Section(parser, path, "cache")),
        origins=origins,
        local=_local(_Section(parser, path, "local")) if "local" in origins.chain else None,
        shards=_shards(_Section(parser, path, "shards")) if "shards" in origins.chain else None,
        resize=resize,
        s3=_s3(parser, path) if "s3" in origins.chain else (),
        security=_security(_Section(parser, path, "security")),
        log=_log(_Section(parser, path, "log")),
        tls=_tls(_Section(parser, path, "tls"), listen) if parser.has_section("tls") else None,
    )


KNOWN_KEYS = {
    "edge": {
        "listen", "admin_listen", "hostnames", "extensions", "drain_timeout",
        "header_timeout", "idle_timeout", "send_timeout", "max_connections", "workers",
    },
    "log": {"access_log", "success_rate", "errors_per_minute"},
    "cache": {"memory_bytes", "max_object_bytes", "disk_path", "disk_bytes", "negative_ttl", "policy"},
    "origins": {
        "chain", "timeout", "connect_timeout", "max_body_bytes", "connections_per_host", "verify_hash",
        "ca_bundle", "deadline", "max_in_flight", "down_after", "down_for", "max_down_for",
        "hedge_after", "hedge_percentile", "hedge_share", "hedge_min",
    },
    "local": {"root", "path_template"},
    "shards": {"tokenmap", "previous", "path_template", "scheme"},
    "s3": {"regions"},
    "security": {"keys", "sign"},
    "tls": {"listen", "certificates"},
    "resize": {
        "presets", "allowed_sizes", "max_dimension", "quality", "source_ext", "max_source_pixels",
        "render_workers", "render_queue", "tenant_share", "render_mode", "render_priority",
        "max_source_frames", "upscale", "background",
    },
}
S3_REGION_KEYS = {"endpoint", "bucket", "region", "credentials", "access_key", "secret_key", "key_template"}


def _check_known(parser: configparser.ConfigParser, path: str) -> None:
    """A misspelt key would silently fall back to a default: refuse it instead."""
    known = dict(KNOWN_KEYS)
    known.update((f"s3:{name}", S3_REGION_KEYS) for name in parser.get("s3", "regions", fallback="").split())
    for name in parser.sections():
        if name not in known:
            hint = " (a region section must be listed in [s3] regions)" if name.startswith("s3:") else ""
            raise ConfigError(f"{path}: [{name}]: unknown section{hint}")
        for key in parser.options(name):
            if key not in known[name]:
                raise ConfigError(f"{path}: [{name}] {key}: unknown key")


def _read(path: str, text: str | None = None) -> tuple[configparser.ConfigParser, str]:
    """What the file says, and its text (or what `text`, read from it before, says)."""
    try:
        text = read_text(path) if text is None else text
        parser = parse_ini(text, path)
    except IniError as error:
        raise ConfigError(f"{path}: {error}") from None
    _check_known(parser, path)
    return parser, text


def _edge(section: _Section, parse_listen: Callable[[str], tuple[str, ...]]) -> EdgeConfig:
    return EdgeConfig(
        listen=section.get("listen", parse_listen),
        admin_listen=section.get("admin_listen", parse_endpoints, ("tcp:8081:interface=127.0.0.1",)),
        hostnames=section.get("hostnames", lambda raw: frozenset(h.lower().encode() for h in raw.split())),
        extensions=section.get("extensions", parse_extensions, frozenset({"jpg"})),
        drain_timeout=section.get("drain_timeout", parse_duration, 10.0),
        limits=ConnectionLimits(
            header_timeout=section.get("header_timeout", parse_duration, 10.0),
            idle_timeout=section.get("idle_timeout", parse_duration, 60.0),
            send_timeout=section.get("send_timeout", parse_duration, 30.0),
            max_connections=section.get("max_connections", parse_count, 10_000),
        ),
        workers=section.get("workers", parse_workers, 0),
    )


def _log(section: _Section) -> LogConfig:
    target = section.get("access_log", str, "-")
    if target != "-" and target != "off":
        target = section.file("access_log")
        _check_appendable(section, "access_log", target)
    return LogConfig(
        access_log=None if target == "off" else target,
        success_rate=section.get("success_rate", _parse_rate, 0.01),
        errors_per_minute=section.get("errors_per_minute", parse_count, 600),
    )


def _check_appendable(section: _Section, key: str, path: str) -> None:
    """
    Opened as the access log will be (creating it): a folder that does not exist or
    cannot be written is refused here, where it used to end a single process in a
    traceback and every worker at its start, replaced forever.
    """
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise section.fail(key, f"{path}: cannot be opened for appending: {error.strerror}") from None


def _parse_rate(raw: str) -> float:
    return 0.0 if raw.strip() in ("0", "0.0") else parse_share(raw)


def parse_workers(raw: str) -> int:
    """`auto` (0: the CPU count) or a number of processes, 1 to 256."""
    if raw.strip() == "auto":
        return 0
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 256:
        raise ValueError(f"{raw!r} is not auto or a number of processes from 1 to 256")
    return int(raw)


def _cache(section: _Section) -> CacheConfig:
    return CacheConfig(
        memory_bytes=section.get("memory_bytes", parse_size),
        max_object_bytes=section.get("max_object_bytes", parse_size, 8 << 20),
        disk_path=section.file("disk_path"),
        disk_bytes=section.get("disk_bytes", parse_size),
        negative_ttl=section.get("negative_ttl", parse_duration, 60.0),
        policy=section.get("policy", parse_choice(tuple(POLICIES)), "s3fifo"),
    )


def _origins(section: _Section) -> OriginsConfig:
    chain = section.get("chain", parse_words(ORIGIN_KINDS), ("shards",))
    if not chain:
        raise section.fail("chain", "names no origin")
    return OriginsConfig(
        chain=chain,
        timeout=section.get("timeout", parse_duration, 10.0),
        connect_timeout=section.get("connect_timeout", parse_duration, 2.0),
        max_body_bytes=section.get("max_body_bytes", parse_size, 32 << 20),
        connections_per_host=section.get("connections_per_host", parse_count, 32),
        verify_hash=section.get("verify_hash", parse_bool, True),
        ca_bundle=_ca_bundle(section),
        deadline=section.get("deadline", parse_duration, 20.0),
        max_in_flight=section.get("max_in_flight", parse_count, 256),
        health=HealthPolicy(
            down_after=section.get("down_after", parse_count, 5),
            down_for=section.get("down_for", parse_duration, 2.0),
            max_down_for=section.get("max_down_for", parse_duration, 60.0),
        ),
        hedge=_hedge(section),
    )


def _ca_bundle(section: _Section) -> str | None:
    path = section.file("ca_bundle", None)
    if path is not None:
        try:
            trust_bundle(path)
        except (OSError, ValueError) as error:
            raise section.fail("ca_bundle", str(error)) from None
    return path


def _hedge(section: _Section) -> HedgePolicy | None:
    after = section.get("hedge_after", _parse_hedge_after, "auto")
    if after == "off":
        return None
    minimum = section.get("hedge_min", parse_duration, 0.01)
    return HedgePolicy(
        after=None if after == "auto" else after,
        percentile=section.get("hedge_percentile", parse_share, 0.95),
        share=section.get("hedge_share", parse_share, 0.05),
        floor=minimum,
        initial=max(minimum, 0.1),
    )


def _parse_hedge_after(raw: str) -> float | str:
    return raw if raw in ("auto", "off") else parse_duration(raw)


def _tls(section: _Section, parse_listen: Callable[[str], tuple[str, ...]]) -> TLSConfig:
    pairs = section.get("certificates", lambda raw: tuple(_certificate_pair(section, item) for item in raw.split()))
    try:
        SNIServerContexts(pairs)
    except CertificateError as error:
        raise section.fail("certificates", str(error)) from None
    return TLSConfig(listen=section.get("listen", parse_listen), certificates=pairs)


def _certificate_pair(section: _Section, item: str) -> CertificatePair:
    chain, sep, key = item.partition(":")
    if not sep or not chain or not key:
        raise ValueError(f"{item!r} is not CHAIN.pem:KEY.pem")
    folder = os.path.dirname(section.path)
    return CertificatePair(os.path.join(folder, chain), os.path.join(folder, key))


def _security(section: _Section) -> SecurityConfig:
    keys = section.get("keys", _parse_keys, ())
    sign = section.get("sign", parse_choice(("explicit", "all", "none")), "explicit")
    if sign == "all" and not keys:
        raise section.fail("sign", "'all' needs [security] keys (there is no default key)")
    return SecurityConfig(keys=keys, sign=sign)


def _parse_keys(raw: str) -> tuple[bytes, ...]:
    keys = tuple(word.encode() for word in raw.split())
    for index, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"key {index} is shorter than {MIN_KEY_BYTES} characters")
    return keys


def _local(section: _Section) -> LocalConfig:
    root = section.file("root")
    if not os.path.isdir(root):
        raise section.fail("root", f"{root!r} is not a directory")
    return LocalConfig(root=root, path_template=section.get("path_template", parse_template, "/{hash}.{ext}"))


def load_shards(path: str) -> ShardsConfig:
    """
    The [shards] section as the file says now, checked as at start-up: what SIGHUP puts
    in force. The whole file is checked for unknown keys too, so a misspelt `previous`
    is refused rather than read as "no previous map".
    """
    return _shards(_Section(_read(path)[0], path, "shards"))


def with_reloaded_maps(text: str, path: str) -> str:
    """
    `text`, the config a supervisor started with, naming the `[shards] tokenmap` and
    `previous` the file at `path` names now, checked as SIGHUP checks them (ConfigError
    if refused): what a reload put in force in the workers, for a worker started after
    it. Every other key stays as at start, as it does in the workers.
    """
    live, _ = _read(path)
    _shards(_Section(live, path, "shards"))
    parser, _ = _read(path, text)
    for key in ("tokenmap", "previous"):  # as written: relative to the same folder
        if live.has_option("shards", key):
            parser.set("shards", key, live.get("shards", key))
        else:
            parser.remove_option("shards", key)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _shards(section: _Section) -> ShardsConfig:
    path = section.file("tokenmap")
    previous_path = section.file("previous", None)
    template = section.get("path_template", parse_template, "/{hash}.{ext}")
    return ShardsConfig(
        tokenmap=_tokenmap(section, "tokenmap", path),
        tokenmap_path=path,
        previous=_tokenmap(section, "previous", previous_path) if previous_path else None,
        previous_path=previous_path,
        path_template=template,
        scheme=section.get("scheme", parse_choice(("http", "https")), "http"),
    )


def _tokenmap(section: _Section, key: str, path: str) -> TokenMap:
    try:
        return load_tokenmap(path)
    except TokenMapError as exc:
        raise section.fail(key, str(exc)) from None


def _s3(parser: configparser.ConfigParser, path: str) -> tuple[S3RegionConfig, ...]:
    """The regions in the order they are tried; each must have its own [s3:NAME] section."""
    section = _Section(parser, path, "s3")
    names = section.get("regions", parse_region_names)
    for name in names:
        if not parser.has_section(f"s3:{name}"):
            raise section.fail("regions", f"region {name!r} has no [s3:{name}] section")
    return tuple(_s3_region(_Section(parser, path, f"s3:{name}"), name) for name in names)


def _s3_region(section: _Section, name: str) -> S3RegionConfig:
    credentials = section.get("credentials", parse_choice(S3_CREDENTIALS), "chain")
    keys = [section.get(key, str, "") for key in ("access_key", "secret_key")]
    for key, value in zip(("access_key", "secret_key"), keys):
        if credentials == "static" and not value:
            raise section.fail(key, "missing (required with credentials = static)")
        if credentials != "static" and value:
            raise section.fail(key, f"only used with credentials = static, not {credentials}")
    region = section.get("region", parse_pattern(_SIGNING_REGION, "a region name like eu-west-1"), "")
    if credentials != "anonymous" and not region:
        raise section.fail("region", "missing (required to sign requests)")
    return S3RegionConfig(
        name=name,
        endpoint=section.get("endpoint", parse_endpoint_url),
        bucket=section.get("bucket", parse_pattern(_BUCKET, "a bucket name (3-63 lowercase letters, digits, . and -)")),
        region=region,
        credentials=credentials,
        access_key=keys[0],
        secret_key=keys[1],
        key_template=section.get("key_template", parse_key_template, "{p6}/{hash}.{ext}"),
    )


def _resize(section: _Section) -> ResizeConfig:
    max_dimension = section.get("max_dimension", parse_count, 4096)
    sizes = section.get("allowed_sizes", lambda raw: raw.split(), [])
    try:
        allowed = frozenset(parse_geometry(size, max_dimension) for size in sizes)
    except ValueError as exc:
        raise section.fail("allowed_sizes", str(exc)) from None
    quality = section.get("quality", parse_count, 82)
    if quality > 100:
        raise section.fail("quality", f"{quality} is over 100")
    return ResizeConfig(
        presets=section.get("presets", parse_presets(max_dimension), {}),
        allowed_sizes=allowed,
        max_dimension=max_dimension,
        quality=quality,
        source_ext=section.get("source_ext", lambda raw: raw, "jpg"),
        max_source_pixels=section.get("max_source_pixels", parse_count, 50_000_000),
        render_workers=section.get("render_workers", parse_count, 2 * (os.cpu_count() or 1)),
        render_queue=section.get("render_queue", parse_count, 64),
        render_mode=section.get("render_mode", parse_choice(("threads", "processes")), "threads"),
        render_priority=section.get("render_priority", parse_choice((IDLE, LOW)), IDLE),
        max_source_frames=section.get("max_source_frames", parse_count, 1000),
        upscale=section.get("upscale", parse_bool, False),
        background=section.get("background", parse_colour, (255, 255, 255)),
        tenant_share=section.get("tenant_share", parse_share, 0.5),
    )

