"""Configuration files written for a test, starting from a valid one."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


def base_settings(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {
        "edge": {
            "listen": "tcp:0:interface=127.0.0.1",
            "admin_listen": "tcp:0:interface=127.0.0.1",
            "hostnames": "localhost 127.0.0.1 img0.example.com",
            "extensions": "jpg png",
        },
        "cache": {"memory_bytes": "64MiB", "max_object_bytes": "4MiB", "disk_path": str(tmp_path / "cache"), "disk_bytes": "256MiB"},
        "origins": {"chain": "local", "timeout": "5s", "connect_timeout": "1s"},
        "local": {"root": str(SAMPLES), "path_template": "/{hash}.{ext}"},
        "shards": {"tokenmap": str(REPO / "conf" / "tokenmap.ini"), "path_template": "/{hash}.{ext}"},
        "resize": {"presets": "thumb=150x150-cover", "allowed_sizes": "480x0", "quality": "80"},
    }


def write_config(tmp_path: Path, changes: dict[tuple[str, str], str | None] | None = None, name: str = "edgeproxy.ini") -> str:
    """Write the base settings with `changes` applied; a None value removes the key."""
    settings = base_settings(tmp_path)
    for (section, key), value in (changes or {}).items():
        if value is None:
            settings.setdefault(section, {}).pop(key, None)
        else:
            settings.setdefault(section, {})[key] = value
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(settings)
    path = os.path.join(tmp_path, name)
    with open(path, "w", encoding="utf-8") as handle:
        parser.write(handle)
    return path
