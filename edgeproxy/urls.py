"""
The URL grammar of the product contract, as a pure parser: a path either becomes
an ImageRequest with its cache key, or an EdgeError, before any origin hears of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeproxy.errors import EdgeError
from edgeproxy.requesthead import canonical_path, split_target

FITS = ("inside", "cover")
_ORIGINAL = re.compile(rb"/([0-9a-f]{40})\.([a-z0-9]{1,8})")
_VARIANT = re.compile(
    rb"/([0-9a-f]{40})/([A-Za-z0-9_-]{1,64})(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,199})?\.([a-z0-9]{1,8})"
)
_SIZE = re.compile(r"(0|[1-9][0-9]{0,4})x(0|[1-9][0-9]{0,4})(?:-([a-z]+))?")
_PRESET = re.compile(r"[a-z][a-z0-9_-]{0,63}")
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Geometry:
    """A box to fit into; 0 on one side means "follow the aspect ratio"."""

    width: int
    height: int
    fit: str = "inside"

    def __str__(self) -> str:
        return f"{self.width}x{self.height}-{self.fit}"


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What a URL asks for; `key` names it in every cache tier."""

    image_hash: str
    ext: str
    geometry: Geometry | None
    fmt: str | None
    key: bytes
    negotiated: bool = False
    unlisted: bool = False  # an explicit size off the allow-list: served only when signed

    @property
    def is_original(self) -> bool:
        return self.geometry is None

    def in_format(self, fmt: str) -> ImageRequest:
        """This variant in a format chosen from Accept: one of at most three cache keys."""
        key = f"{self.image_hash}/{self.geometry}.{fmt}".encode()
        return ImageRequest(self.image_hash, self.ext, self.geometry, fmt, key, negotiated=True, unlisted=self.unlisted)

    def original(self) -> ImageRequest:
        """What a variant is rendered from: the stored original, cached as an object of its own."""
        return ImageRequest(self.image_hash, self.ext, None, None, f"{self.image_hash}.{self.ext}".encode())


def names_auto(target: bytes) -> bool:
    """
    Whether a request target asks for the `auto` format, so that any answer to it varies
    on Accept: read from its canonical path (`.%61uto` is `.auto`); a path that has none
    is refused whatever the Accept.
    """
    try:
        path = canonical_path(split_target(target)[0])
    except EdgeError:
        return False
    return path.endswith(b"." + AUTO.encode())


def negotiate_format(accept: bytes | None, formats: frozenset[str]) -> str:
    """avif, else webp, else jpg: the best format the browser accepts and we can save."""
    accepted = _accepted_types(accept or b"")
    for fmt, media_type in (("avif", b"image/avif"), ("webp", b"image/webp")):
        if fmt in formats and media_type in accepted:
            return fmt
    return "jpg"


def _accepted_types(accept: bytes) -> set[bytes]:
    """Media types listed in Accept with a q above 0 (wildcards do not count: browsers send */*)."""
    accepted = set()
    for item in accept.lower().split(b","):
        media_type, *params = item.split(b";")
        q = _weight(params)
        if q is None or _positive(q):
            accepted.add(media_type.strip())
    return accepted


def _weight(params: list[bytes]) -> bytes | None:
    """The q parameter's value wherever it stands (parameters may follow it), or None."""
    for param in params:
        name, _, value = param.partition(b"=")
        if name.strip() == b"q":
            return value.strip()
    return None


def _positive(q: bytes) -> bool:
    try:
        return float(q) > 0
    except ValueError:
        return False


def parse_geometry(text: str, max_dimension: int) -> Geometry:
    """Parse `{W}x{H}[-fit]`; raises ValueError with a short reason."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not WxH[-fit]")
    width, height, fit = int(match[1]), int(match[2]), match[3] or "inside"
    if fit not in FITS:
        raise ValueError(f"fit {fit!r} is not one of {', '.join(FITS)}")
    if width == 0 and height == 0:
        raise ValueError("width and height cannot both be 0")
    if max(width, height) > max_dimension:
        raise ValueError(f"{text} is over the {max_dimension} px limit")
    return Geometry(width, height, fit)


@dataclass(frozen=True)
class UrlGrammar:
    """The configurable parts of the grammar: extensions, formats, presets, allowed sizes."""

    extensions: frozenset[str]
    formats: frozenset[str]
    presets: dict[str, Geometry]
    allowed_sizes: frozenset[Geometry]
    max_dimension: int
    source_ext: str = "jpg"

    def parse(self, path: bytes) -> ImageRequest:
        """Map a raw (still percent-encoded) request path to what it names."""
        match = _ORIGINAL.fullmatch(path)
        if match:
            return self._original(match[1].decode(), match[2].decode())
        match = _VARIANT.fullmatch(path)
        if match:
            return self._variant(match[1].decode(), match[2].decode(), match[3].decode())
        raise EdgeError(404, "not found")

    def _original(self, image_hash: str, ext: str) -> ImageRequest:
        if ext not in self.extensions:
            raise EdgeError(404, "not found")
        return ImageRequest(image_hash, ext, None, None, f"{image_hash}.{ext}".encode())

    def _variant(self, image_hash: str, name: str, fmt: str) -> ImageRequest:
        if fmt not in self.formats and fmt != AUTO:
            raise EdgeError(404, "not found")
        geometry = self._geometry(name)
        key = f"{image_hash}/{geometry}.{fmt}".encode()
        unlisted = name not in self.presets and geometry not in self.allowed_sizes
        return ImageRequest(image_hash, self.source_ext, geometry, fmt, key, unlisted=unlisted)

    def _geometry(self, name: str) -> Geometry:
        if _PRESET.fullmatch(name):
            preset = self.presets.get(name)
            if preset is None:
                raise EdgeError(404, "not found")
            return preset
        try:
            return parse_geometry(name, self.max_dimension)
        except ValueError as exc:
            raise EdgeError(400, f"bad size: {exc}") from None
