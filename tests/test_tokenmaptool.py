"""The console script, run through main() and once as a real subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproxy.resharding import ranges
from edgeproxy.tokenmap import load_tokenmap
from edgeproxy.tokenmaptool import main
from tests.configs import REPO

SAMPLE = str(REPO / "conf" / "tokenmap.ini")
PATTERNS = ["--primary", "images-m-{n:02d}:8080", "--secondary", "images-s-{n:02d}:8080"]


@pytest.fixture
def doubled(tmp_path):
    path = str(tmp_path / "tokenmap-64.ini")
    assert main(["split", SAMPLE, *PATTERNS, "--output", path]) == 0
    return path


def write(tmp_path, text: str) -> str:
    path = tmp_path / "map.ini"
    path.write_text(text)
    return str(path)


def pair(n: int) -> tuple[str, str]:
    return (f"images-m-{n:02d}:8080", f"images-s-{n:02d}:8080")


def test_split_writes_a_64_pair_map_keeping_every_token_on_its_old_or_its_new_pair(doubled):
    new = load_tokenmap(doubled)
    assert len(set(new.pairs)) == 64
    for index, (lo, hi, _) in enumerate(ranges(load_tokenmap(SAMPLE)), start=1):
        assert {new.owner(token) for token in range(lo, hi + 1)} == {pair(index), pair(32 + index)}
    assert Path(doubled).read_text().startswith(f"# Split from {SAMPLE} by edgeproxy-tokenmap split: 32 ranges halved into 64.\n")
    assert os.listdir(os.path.dirname(doubled)) == ["tokenmap-64.ini"]


def test_split_without_output_prints_the_same_map(doubled, capsys):
    assert main(["split", SAMPLE, *PATTERNS]) == 0
    assert capsys.readouterr().out == Path(doubled).read_text()


def test_split_replaces_an_existing_output_file(doubled):
    assert main(["split", SAMPLE, *PATTERNS, "--output", doubled]) == 0
    assert main(["split", doubled, *PATTERNS, "--output", doubled]) == 0
    assert len(load_tokenmap(doubled).bounds) == 128


def test_diff_of_a_split_lists_the_upper_halves_and_exits_1(doubled, capsys):
    assert main(["diff", SAMPLE, doubled]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 33
    assert lines[0] == "0290-051e: images-m-01:8080 images-s-01:8080 -> images-m-33:8080 images-s-33:8080"
    assert lines[31] == "cf52-ffff: images-m-32:8080 images-s-32:8080 -> images-m-64:8080 images-s-64:8080"
    assert lines[32] == "32767 of 65536 tokens (50.00 %) change pair in 32 ranges"


def test_diff_of_identical_maps_exits_0(capsys):
    assert main(["diff", SAMPLE, SAMPLE]) == 0
    assert capsys.readouterr().out == "0 of 65536 tokens (0.00 %) change pair in 0 ranges\n"


def test_check_counts_ranges_pairs_and_servers(doubled, capsys):
    assert main(["check", doubled]) == 0
    assert capsys.readouterr().out == f"{doubled}: 64 ranges, 64 pairs, 128 servers\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "cannot read: No such file or directory"),
        ("[tokenmap]\n8000 = a:1\nfffe = b:1\n", "the last bound is fffe, it must be ffff"),
        ("[tokenmap]\n8000 = a:1\n0100 = b:1\nffff = c:1\n", "bound 0100 is out of order (bounds must increase)"),
        ("[tokenmap]\nffff = a\n", "bound ffff: 'a' is not host:port"),
        ("[shards]\nffff = a:1\n", "no [tokenmap] section"),
        ("no section\n", "File contains no section headers."),
    ],
)
@pytest.mark.parametrize("command", [["check", "MAP"], ["split", "MAP", *PATTERNS], ["diff", SAMPLE, "MAP"], ["diff", "MAP", SAMPLE]])
def test_bad_maps_exit_2_with_one_line(tmp_path, capsys, text, message, command):
    path = write(tmp_path, text) if text is not None else str(tmp_path / "map.ini")
    assert main([path if arg == "MAP" else arg for arg in command]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"edgeproxy-tokenmap: {path}") and err.endswith(f"{message}\n")
    assert err.count("\n") == 1


def test_a_one_token_range_cannot_be_split(tmp_path, capsys):
    path = write(tmp_path, "[tokenmap]\n0000 = a:1\nffff = b:1\n")
    assert main(["split", path, *PATTERNS]) == 2
    assert capsys.readouterr().err == "edgeproxy-tokenmap: range 0000-0000 is one token and cannot be halved\n"


def test_an_unwritable_output_exits_2_naming_it(tmp_path, capsys):
    target = tmp_path / "absent" / "map.ini"
    assert main(["split", SAMPLE, *PATTERNS, "--output", str(target)]) == 2
    assert capsys.readouterr().err == f"edgeproxy-tokenmap: {target}: No such file or directory\n"


def test_an_output_that_cannot_be_replaced_leaves_no_temporary_file(tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    assert main(["split", SAMPLE, *PATTERNS, "--output", str(tmp_path / "adir")]) == 2
    assert capsys.readouterr().err == f"edgeproxy-tokenmap: {tmp_path}/adir: Is a directory\n"
    assert os.listdir(tmp_path) == ["adir"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "edgeproxy.tokenmaptool", *args]
    return subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=60)


def test_the_module_runs_as_a_script_with_diff_exit_statuses(doubled, tmp_path):
    moved = run("diff", SAMPLE, doubled)
    assert (moved.returncode, moved.stderr) == (1, "")
    assert moved.stdout.splitlines()[-1] == "32767 of 65536 tokens (50.00 %) change pair in 32 ranges"
    assert run("diff", doubled, doubled).returncode == 0
    bad = run("diff", SAMPLE, str(tmp_path / "absent.ini"))
    assert bad.returncode == 2
    assert bad.stderr == f"edgeproxy-tokenmap: {tmp_path}/absent.ini: cannot read: No such file or directory\n"
