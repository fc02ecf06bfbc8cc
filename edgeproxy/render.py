"""
Rendering a variant with libvips, set up as imgproxy runs it: operation cache off,
libvips' own threading at 1 (our pool gives the parallelism), and only the loaders
of the allowed source formats unblocked, so an SVG, PDF or anything else that
slips past the magic-byte check is refused by libvips itself. Source limits are
checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pyvips
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from edgeproxy.arenas import limit_malloc_arenas
from edgeproxy.colour import needs_srgb_conversion
from edgeproxy.errors import EdgeError
from edgeproxy.mediatype import sniff_media_type
from edgeproxy.urls import Geometry

log = Logger()
# libvips' default AV1 effort (4) took 1.35 s for one 640 px variant here and 16 s for a
# 1200 px one, holding a render worker all that time; effort 1 takes 0.08 s for the 640 px
# one, for a file about a third larger. Still slower than WebP: AVIF is asked for by `auto`.
AVIF_EFFORT = 1
_ALLOWED_LOADERS = ("VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp", "VipsForeignLoadNsgif", "VipsForeignLoadHeif")


def configure_libvips() -> None:
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.concurrency_set(1)
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader in _ALLOWED_LOADERS:
        pyvips.operation_block_set(loader, False)


IDLE, LOW = "idle", "low"
LOW_NICE = 10  # how much nicer than the reactor `low` renders run
_lowered: set[int] = set()


def lower_priority(priority: str, every_thread: bool = False) -> None:
    """
    Lower the calling thread and libvips' workers (or `every_thread`, in a render
    process) to `priority`. IDLE is Linux's SCHED_IDLE: renders run on the CPU time
    hits leave, and a hit that wakes up takes the core back at once; beside saturating
    renders, hits kept 0.83x of their rate (0.67x at nice +10, 0.73x at +19). But when
    hits alone fill every core, renders all but stop: in a saturating soak, 28 of about
    300 renders waited past wrk's 2 s timeout, none at nice +10. LOW is nice +10: renders
    always progress, hits yield more. A policy and a nice value belong to a thread on
    Linux and are inherited by the threads it starts; libvips does the pixel work in a
    pool of its own, whose first threads may have been started by the reactor's thread,
    so they are found by name in /proc. A thread already lowered is skipped.
    """
    try:
        for thread in os.listdir("/proc/self/task"):
            tid = int(thread)
            if tid in _lowered:
                continue
            if every_thread or tid == threading.get_native_id() or _thread_name(tid) == "libvips worker":
                _lower(tid, priority)
                _lowered.add(tid)
    except OSError as error:  # no /proc, or a thread that just ended: renders still run
        log.debug("render priority not lowered: {error}", error=error)


def _lower(tid: int, priority: str) -> None:
    if priority == IDLE:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    else:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + LOW_NICE)
        os.setpriority(os.PRIO_PROCESS, tid, max(target, os.getpriority(os.PRIO_PROCESS, tid)))


def _thread_name(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/comm") as comm:
        return comm.read().strip()


def _configure_render_process(priority: str) -> None:
    """A render process: every thread of it at render priority, libvips as in the proxy."""
    lower_priority(priority, every_thread=True)
    configure_libvips()
    limit_malloc_arenas(1)


def _render_in_pool(source: bytes, geometry: Geometry, fmt: str, settings: RenderSettings) -> bytes:
    lower_priority(settings.priority)
    return render(source, geometry, fmt, settings)


def saveable_formats() -> frozenset[str]:
    """The output formats this libvips build can write (avif needs libheif with AV1)."""
    formats = {"jpg", "png", "webp"}
    try:
        pyvips.Image.black(1, 1).heifsave_buffer(compression="av1")
        formats.add("avif")
    except pyvips.Error:
        pass
    return frozenset(formats)


@dataclass(frozen=True)
class RenderSettings:
    quality: int = 82
    max_pixels: int = 50_000_000
    max_frames: int = 1000
    background: tuple[int, int, int] = (255, 255, 255)
    upscale: bool = False
    priority: str = IDLE  # of the render threads and processes: IDLE or LOW
    max_dimension: int = 4096  # of an output side, the auto (0) one included


class RenderUnavailable(EdgeError):
    """A render cut off on our side (its pool stopping or replaced, the channel to it gone): worth a retry."""

    def __init__(self) -> None:
        super().__init__(503, "render unavailable, retry shortly", {b"Retry-After": b"1"})


class Unrenderable(EdgeError):
    """The original cannot be made into this variant: never cached, answered 502."""

    def __init__(self, reason: str):
        super().__init__(502, "original is not a decodable image")
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str]]:
        """Keep the reason when the error comes back from a render process."""
        return Unrenderable, (self.reason,)


def render(source: bytes, geometry: Geometry, fmt: str, settings: RenderSettings) -> bytes:
    """Runs in the render pool. The first frame of an animation; EXIF orientation applied."""
    header = _check_source(source, settings)
    geometry = _bounded(geometry, settings.max_dimension)
    try:
        image = _thumbnail(source, header, geometry, settings)
        return _save(_to_srgb(image, fmt, settings), fmt, settings)
    except pyvips.Error as error:
        raise Unrenderable(str(error).splitlines()[0]) from None


def _thumbnail(source: bytes, header: pyvips.Image, geometry: Geometry, settings: RenderSettings) -> pyvips.Image:
    """
    thumbnail_buffer decodes a JPEG at half the shrink it could use; decoding at the
    largest shrink that still covers the box is ~1.35x faster for the same pixels.
    The decoder rounds the shrunk size, so the final size is computed from the
    original's, and forced.
    """
    options = _thumbnail_options(geometry, settings)
    width, height = _displayed_size(header)
    shrink = _jpeg_shrink(width, height, geometry) if header.get("vips-loader").startswith("jpegload") else 1
    if shrink == 1:
        return pyvips.Image.thumbnail_buffer(source, geometry.width, **options)
    loaded = pyvips.Image.new_from_buffer(source, "", shrink=shrink, fail_on="truncated")
    if "crop" in options:
        return loaded.thumbnail_image(geometry.width, height=geometry.height, crop="centre")
    fitted_width, fitted_height = _fitted_size(width, height, geometry, settings.upscale)
    return loaded.thumbnail_image(fitted_width, height=fitted_height, size="force")


def _bounded(geometry: Geometry, max_dimension: int) -> Geometry:
    """
    An auto (0) side follows the aspect ratio up to `max_dimension`: unbounded, `100x0`
    of a 100x20000 source came out 100x20000, and with upscale `480x0` of an 8x1000 one
    480x60000 (29 MP from 8000 pixels). A cover box with an auto side never cropped: it
    fits inside.
    """
    if geometry.width and geometry.height:
        return geometry
    return Geometry(geometry.width or max_dimension, geometry.height or max_dimension)


def _displayed_size(header: pyvips.Image) -> tuple[int, int]:
    """Width and height as shown, after the EXIF orientation is applied."""
    if header.get_typeof("orientation") and header.get("orientation") in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def _fitted_size(width: int, height: int, geometry: Geometry, upscale: bool) -> tuple[int, int]:
    """The size that fits inside the box keeping the aspect ratio, halves rounded up."""
    shrink = max(width / geometry.width, height / geometry.height)
    if not upscale:
        shrink = max(shrink, 1.0)
    return max(1, math.floor(width / shrink + 0.5)), max(1, math.floor(height / shrink + 0.5))


def _jpeg_shrink(width: int, height: int, geometry: Geometry) -> int:
    """The largest JPEG decode shrink (8, 4, 2) whose image still covers the box."""
    scales = (geometry.width / width, geometry.height / height)
    scale = max(scales) if geometry.fit == "cover" else min(scales)
    return next((shrink for shrink in (8, 4, 2) if 1 / shrink >= scale), 1)


def _check_source(source: bytes, settings: RenderSettings) -> pyvips.Image:
    if sniff_media_type(source) is None:
        raise Unrenderable("not an allowed image format")
    try:
        header = pyvips.Image.new_from_buffer(source, "", access="sequential")
    except pyvips.Error as error:
        raise Unrenderable(str(error).splitlines()[0]) from None
    if header.width * header.height > settings.max_pixels:
        raise Unrenderable(f"{header.width}x{header.height} is over {settings.max_pixels} pixels")
    pages = header.get("n-pages") if header.get_typeof("n-pages") else 1
    if pages > settings.max_frames:
        raise Unrenderable(f"{pages} frames is over {settings.max_frames}")
    return header


def _thumbnail_options(geometry: Geometry, settings: RenderSettings) -> dict[str, object]:
    # fail_on is a loader option: a truncated source must fail, not render grey.
    options: dict[str, object] = {
        "height": geometry.height,
        "size": "both" if settings.upscale else "down",
        "option_string": "fail_on=truncated",
    }
    if geometry.fit == "cover":
        options["crop"] = "centre"
    return options


def _to_srgb(image: pyvips.Image, fmt: str, settings: RenderSettings) -> pyvips.Image:
    if needs_srgb_conversion(image):
        image = image.icc_transform("srgb", embedded=True)
    if image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.hasalpha() and fmt == "jpg":
        if image.bands < 3 and len(set(settings.background)) > 1:  # flatten takes a grey from a colour's first band
            image = image.colourspace("srgb")
        image = image.flatten(background=list(settings.background))
    return image


def _save(image: pyvips.Image, fmt: str, settings: RenderSettings) -> bytes:
    if fmt == "jpg":
        return image.jpegsave_buffer(Q=settings.quality, keep="none", optimize_coding=True)
    if fmt == "png":
        return image.pngsave_buffer(keep="none")
    if fmt == "webp":
        return image.webpsave_buffer(Q=settings.quality, keep="none")
    return image.heifsave_buffer(Q=settings.quality, compression="av1", effort=AVIF_EFFORT, keep="none")


class IRenderer(Interface):
    def render(source: bytes, geometry: Geometry, fmt: str) -> "Deferred[bytes]":
        """Render off the reactor thread; fails with Unrenderable for a bad source."""


@implementer(IRenderer)
class ThreadRenderer:
    """Renders in a dedicated thread pool (libvips releases the GIL), never the reactor's."""

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool, settings: RenderSettings):
        self._reactor = reactor
        self._pool = pool
        self._settings = settings

    def render(self, source: bytes, geometry: Geometry, fmt: str) -> "Deferred[bytes]":
        return deferToThreadPool(self._reactor, self._pool, _render_in_pool, source, geometry, fmt, self._settings)


@implementer(IRenderer)
class ProcessRenderer:
    """
    Renders in worker processes: the reactor's process keeps its GIL for serving
    hits, and a crash inside libvips kills a worker, not the proxy (the pool is
    then rebuilt). Workers come from a fork server, never a fork of the reactor.
    """

    def __init__(self, reactor: IReactorFromThreads, workers: int, settings: RenderSettings):
        self._reactor = reactor
        self._workers = workers
        self._settings = settings
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["edgeproxy.render"])
        return ProcessPoolExecutor(
            self._workers, mp_context=context, initializer=_configure_render_process, initargs=(self._settings.priority,)
        )

    def render(self, source: bytes, geometry: Geometry, fmt: str) -> "Deferred[bytes]":
        done: Deferred[bytes] = Deferred()
        executor = self._executor
        try:
            future = executor.submit(render, source, geometry, fmt, self._settings)
        except BrokenProcessPool:
            executor = self._restart(executor)
            future = executor.submit(render, source, geometry, fmt, self._settings)
        future.add_done_callback(lambda f: self._reactor.callFromThread(self._settle, f, done, executor))
        return done

    def _settle(self, future: Future, done: "Deferred[bytes]", executor: ProcessPoolExecutor) -> None:
        """
        A render still waiting for a process is cancelled when the pool is replaced or
        stopped: its caller hears so (exception() would raise, and the render's queue
        slot and flight would wait forever).
        """
        if future.cancelled():
            done.errback(RenderUnavailable())
            return
        error = future.exception()
        if error is None:
            done.callback(future.result())
        elif isinstance(error, BrokenProcessPool):
            self._restart(executor)
            done.errback(Unrenderable("the render process died"))
        else:
            done.errback(error)

    def _restart(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """Replace a broken pool, once however many renders it failed."""
        if self._executor is broken:
            log.error("a render process died: restarting the render pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
        return self._executor

    def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
