"""The bundled systemd unit lets edgeproxy do what its configuration asks, as systemd reads the unit."""

import functools
import shutil
import subprocess

import pytest

from tests.configs import REPO

UNIT = REPO / "systemd" / "edgeproxy.service"


def syscalls(name: str) -> set[str]:
    """A system call, or every call of a @group (nested groups expanded), as systemd-analyze lists them."""
    if not name.startswith("@"):
        return {name}
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    found: set[str] = set()
    for line in listing.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            found |= syscalls(word)
    return found


@functools.cache
def allowed_syscalls() -> set[str]:
    """The unit's SystemCallFilter= lines in order: the first is an allow-list, `~` takes calls away, a plain one gives back."""
    allowed: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            names = set().union(*(syscalls(word) for word in value.lstrip("~").split()))
            allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


@pytest.mark.parametrize("priority, call", [("idle", "sched_setscheduler"), ("low", "setpriority"), ("low", "getpriority")])
def test_renders_may_lower_their_priority_under_the_unit(priority, call):
    """
    Under the unit, every render died of SIGSYS with the default `render_priority = idle`:
    sched_setscheduler (SCHED_IDLE) is in @resources, which the unit filters, and only
    setpriority (for `low`) was given back.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze to expand the unit's system call groups")
    assert call in allowed_syscalls(), f"render_priority = {priority} calls {call}, which the unit's SystemCallFilter kills"
