"""Reading an INI file (the config, a token map) so that every problem is one short line."""

from __future__ import annotations

import configparser


class IniError(ValueError):
    """A file that cannot be read as INI; str() says why in one line."""


def read_ini(path: str) -> configparser.ConfigParser:
    return parse_ini(read_text(path), path)


def read_text(path: str) -> str:
    """The whole file, read once: what was checked can be kept (a supervisor's config, for its workers)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise IniError(f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise IniError("not UTF-8 text") from None


def parse_ini(text: str, path: str) -> configparser.ConfigParser:
    """
    `text` as read from `path`. No interpolation, and a key or section given twice is
    an error, not a silent override.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateOptionError as exc:
        raise IniError(f"[{exc.section}] {exc.option} is duplicated") from None
    except configparser.Error as exc:
        raise IniError(exc.message.splitlines()[0]) from None
    return parser
