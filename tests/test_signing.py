"""Signed URLs: HMAC-SHA256 over path and expiry, key rotation, 403s that never reveal the expected signature."""

import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from edgeproxy.config import ConfigError, load_config
from edgeproxy.errors import EdgeError
from edgeproxy.signing import Signer
from edgeproxy.signtool import main
from tests.configs import REPO, write_config

OLD, NEW = b"o" * 32, b"n" * 40
PATH = "/" + "ab" * 20 + "/640x0.webp"


def split(url: str) -> tuple[bytes, bytes]:
    parts = urlsplit(url)
    return parts.path.encode(), parts.query.encode()


def refusal(signer, url, now=1000.0) -> str:
    with pytest.raises(EdgeError) as caught:
        signer.check(*split(url), now=now)
    assert caught.value.status == 403
    return caught.value.message


def test_a_signed_url_checks_and_any_change_is_refused():
    signer = Signer([NEW])
    url = signer.sign(PATH)
    signer.check(*split(url), now=1000.0)
    assert refusal(signer, url.replace("640x0", "641x0")) == "bad signature"
    assert refusal(signer, url[:-2] + "AA") == "bad signature"
    assert refusal(signer, PATH) == "signature required"
    assert refusal(Signer([OLD]), url) == "bad signature"


def test_expiry_is_signed_and_enforced():
    signer = Signer([NEW])
    url = signer.sign(PATH, expires=2000)
    signer.check(*split(url), now=1999.0)
    assert refusal(signer, url, now=2001.0) == "signature expired"
    assert refusal(signer, url.replace("exp=2000", "exp=9999")) == "bad signature"
    assert refusal(signer, url.replace("exp=2000", "exp=soon")) == "bad signature"
    assert refusal(signer, url.replace("exp=2000", "exp=%C2%B2")) == "bad signature"  # '²': a digit to isdigit(), not to int()


def test_rotation_accepts_every_key_and_signs_with_the_first():
    old_url = Signer([OLD]).sign(PATH)
    rotated = Signer([NEW, OLD])
    rotated.check(*split(old_url), now=0)
    assert rotated.sign(PATH) == Signer([NEW]).sign(PATH)


def test_the_expected_signature_never_appears_in_an_error():
    signer = Signer([NEW])
    good = split(signer.sign(PATH))[1].decode().split("sig=")[1]
    message = refusal(signer, PATH + "?sig=wrong")
    assert good not in message and "wrong" not in message


def test_no_default_key_and_short_keys_are_refused(tmp_path):
    with pytest.raises(ValueError):
        Signer([])
    with pytest.raises(ConfigError, match=r"\[security\] keys: key 1 is shorter than 32 characters"):
        load_config(write_config(tmp_path, {("security", "keys"): "short"}))
    with pytest.raises(ConfigError, match=r"\[security\] sign: 'all' needs \[security\] keys"):
        load_config(write_config(tmp_path, {("security", "sign"): "all"}))


def test_edgeproxy_sign_prints_urls_the_proxy_accepts(tmp_path, capsys):
    config = write_config(tmp_path, {("security", "keys"): f"{NEW.decode()} {OLD.decode()}"})
    assert main(["--config", config, "--base", "https://img0.example.com", PATH]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("https://img0.example.com" + PATH + "?sig=")
    Signer([NEW]).check(*split(url), now=0)
    assert main(["--config", config, "--ttl", "60s", PATH]) == 0
    assert "exp=" in capsys.readouterr().out
    assert main(["--config", write_config(tmp_path), PATH]) == 2
    assert "there is no default key" in capsys.readouterr().err


def test_the_console_script_runs_as_a_module(tmp_path):
    config = write_config(tmp_path, {("security", "keys"): NEW.decode()})
    result = subprocess.run([sys.executable, "-m", "edgeproxy.signtool", "--config", config, PATH], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith(PATH + "?sig=")
