"""
Which embedded colour profiles a variant must be converted from. Variants are saved
without a profile, so their pixels must be sRGB: an RGB source under another profile
(Display P3 from a phone, Adobe RGB from a camera or an editor) shown as if it were
sRGB looks washed out. But converting costs about 4 ms per render, almost all of it
building the colour transform, and most tagged photos carry an sRGB profile, for which
the conversion changes nothing. So each distinct profile is tried once on a few test
colours, and the answer is remembered.
"""

from __future__ import annotations

import hashlib
import threading

import pyvips
from cachetools import LRUCache

# Primaries, secondaries, greys and a skin tone: under a profile that is not sRGB's,
# some of them move by far more than the tolerance.
_PROBES = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
           (128, 128, 128), (32, 32, 32), (224, 172, 140))
_TOLERANCE = 3  # of 255: rounding in the transform, not a colour shift
_verdicts: LRUCache = LRUCache(maxsize=256)  # profile digest -> does it need converting
_verdicts_lock = threading.Lock()  # render threads share it


def needs_srgb_conversion(image: pyvips.Image) -> bool:
    """An RGB image whose embedded profile is not sRGB's (libvips drops an unreadable one as it loads)."""
    if image.interpretation not in ("srgb", "rgb16") or not image.get_typeof("icc-profile-data"):
        return False
    profile = image.get("icc-profile-data")
    digest = hashlib.sha1(profile).digest()
    with _verdicts_lock:
        verdict = _verdicts.get(digest)
    if verdict is None:
        verdict = _moves_colours(profile)
        with _verdicts_lock:
            _verdicts[digest] = verdict
    return verdict


def _moves_colours(profile: bytes) -> bool:
    pixels = bytes(band for colour in _PROBES for band in colour)
    probes = pyvips.Image.new_from_memory(pixels, len(_PROBES), 1, 3, "uchar").copy(interpretation="srgb")
    probes.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    converted = probes.icc_transform("srgb", embedded=True)
    return (converted.cast("int") - probes.cast("int")).abs().max() > _TOLERANCE
