"""The wheel really ships the twistd plugin (`packages = find:` would silently drop it) and the console script."""

import subprocess
import sys
import zipfile

from tests.configs import REPO


def test_wheel_contains_the_plugin_and_no_plugins_init(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("edgeproxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/edgeproxy_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "edgeproxy/tap.py" in names
    assert "edgeproxy/py.typed" in names
    (entry_points_file,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    entry_points = zipfile.ZipFile(wheel).read(entry_points_file).decode()
    assert "edgeproxy-tokenmap = edgeproxy.tokenmaptool:main" in entry_points
    assert "edgeproxy-warm = edgeproxy.warm:main" in entry_points
