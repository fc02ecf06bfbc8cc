from collections import Counter

import pytest

from edgeproxy.hostshard import hostname_for, main
from tests.images import name_of, photo

HOSTS = [f"img{n}.example.com" for n in range(4)]


def test_each_image_always_gets_the_same_host_and_hosts_share_the_load():
    hashes = [name_of(str(i).encode()) for i in range(4000)]
    first = [hostname_for(h, HOSTS) for h in hashes]
    assert first == [hostname_for(h, HOSTS) for h in hashes]
    counts = Counter(first)
    assert set(counts) == set(HOSTS) and min(counts.values()) > 900


def test_bad_input_is_refused(capsys):
    with pytest.raises(ValueError):
        hostname_for("XYZ", HOSTS)
    with pytest.raises(ValueError):
        hostname_for("a" * 40, [])
    assert main(["--hosts", ",".join(HOSTS), "nothex"]) == 2
    assert "40 lowercase hex" in capsys.readouterr().err


def test_the_command_prints_hash_and_host(capsys):
    image = name_of(photo(32, 32))
    assert main(["--hosts", ",".join(HOSTS), image]) == 0
    assert capsys.readouterr().out == f"{image} {hostname_for(image, HOSTS)}\n"
