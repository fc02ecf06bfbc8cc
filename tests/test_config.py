import configparser

import pytest

from edgeproxy.config import ConfigError, load_config, load_shards, parse_duration, parse_size, with_reloaded_maps
from edgeproxy.origins.health import HealthPolicy
from edgeproxy.urls import Geometry
from tests.configs import REPO, write_config


def test_valid_config_loads_into_typed_objects(tmp_path):
    config = load_config(write_config(tmp_path, {("origins", "chain"): "local shards"}))
    assert config.cache.memory_bytes == 64 << 20
    assert config.origins.timeout == 5.0
    assert config.origins.chain == ("local", "shards")
    assert config.edge.hostnames == frozenset({b"localhost", b"127.0.0.1", b"img0.example.com"})
    assert config.shards.tokenmap.owner(0xFFFF) == ("images-m-32:8080", "images-s-32:8080")
    assert config.resize.presets == {"thumb": Geometry(150, 150, "cover")}
    assert config.resize.allowed_sizes == frozenset({Geometry(480, 0)})


def test_the_bundled_config_loads():
    config = load_config(str(REPO / "conf" / "edgeproxy.ini"))
    assert config.origins.chain == ("local",)
    assert config.local.root.endswith("samples")


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({("cache", "memory_bytes"): None}, "[cache] memory_bytes: missing (required)"),
        ({("edge", "listen"): None}, "[edge] listen: missing (required)"),
        ({("cache", "memory_bytes"): "12XB"}, "[cache] memory_bytes: '12XB' is not a size"),
        ({("cache", "disk_bytes"): "-1GiB"}, "[cache] disk_bytes: '-1GiB' is not a size"),
        ({("origins", "timeout"): "soon"}, "[origins] timeout: 'soon' is not a positive duration"),
        ({("origins", "timeout"): "0"}, "[origins] timeout: '0' is not a positive duration"),
        ({("edge", "listen"): "tcp:notaport"}, "[edge] listen: 'tcp:notaport' is not a server endpoint"),
        ({("edge", "listen"): "carrier-pigeon:8080"}, "[edge] listen: 'carrier-pigeon:8080' is not a server endpoint"),
        ({("edge", "admin_listen"): "tcp:8081 bogus:1"}, "[edge] admin_listen: 'bogus:1' is not a server endpoint"),
        ({("origins", "chain"): "local carrier"}, "[origins] chain: 'carrier' is not one of local, shards"),
        ({("origins", "connections_per_host"): "0"}, "[origins] connections_per_host: '0' is not a whole number"),
        ({("local", "root"): "/nonexistent/dir"}, "[local] root: '/nonexistent/dir' is not a directory"),
        ({("local", "path_template"): "/{name}.jpg"}, "[local] path_template: unknown field {name}"),
        ({("local", "path_template"): "/{p2}/x.jpg"}, "[local] path_template: the template must contain {hash}"),
        ({("resize", "presets"): "Thumb=10x10"}, "[resize] presets: 'Thumb=10x10' is not name=WxH[-fit]"),
        ({("resize", "presets"): "thumb=10x10-squash"}, "[resize] presets: fit 'squash' is not one of"),
        ({("resize", "allowed_sizes"): "0x0"}, "[resize] allowed_sizes: width and height cannot both be 0"),
        ({("resize", "quality"): "101"}, "[resize] quality: 101 is over 100"),
        ({("local", "path_template"): "/{hash}.{ext"}, "[local] path_template: '/{hash}.{ext' is not a valid template"),
        ({("local", "path_template"): "/{{hash}}/{p2}.jpg"}, "[local] path_template: the template must contain {hash}"),
        ({("edge", "extensions"): "jpg JPEG"}, "[edge] extensions: 'JPEG' is not a lowercase extension"),
        ({("resize", "source_ext"): "tif"}, "[resize] source_ext: 'tif' is not in [edge] extensions"),
        ({("origins", "verify_hash"): "maybe"}, "[origins] verify_hash: 'maybe' is not yes or no"),
        ({("edge", "listen"): "ssl:8443:privateKey=/etc/hostname:certKey=/etc/hostname"}, "[edge] listen: 'ssl:8443:privateKey=/etc/hostname:certKey=/etc/hostname' is not a server endpoint"),
        ({("resize", "background"): "white"}, "[resize] background: 'white' is not a colour like #ffffff"),
        ({("resize", "tenant_share"): "1.5"}, "[resize] tenant_share: '1.5' is not a share"),
        ({("resize", "render_mode"): "fibers"}, "[resize] render_mode: 'fibers' is not one of threads, processes"),
        ({("resize", "render_priority"): "realtime"}, "[resize] render_priority: 'realtime' is not one of idle, low"),
        ({("edge", "workers"): "0"}, "[edge] workers: '0' is not auto or a number of processes from 1 to 256"),
        ({("edge", "workers"): "many"}, "[edge] workers: 'many' is not auto or a number of processes from 1 to 256"),
        ({("cache", "memroy_bytes"): "1GiB"}, "[cache] memroy_bytes: unknown key"),
        ({("cahce", "memory_bytes"): "1GiB"}, "[cahce]: unknown section"),
        ({("log", "access_log"): "/nonexistent/dir/access.jsonl"}, "[log] access_log: /nonexistent/dir/access.jsonl: cannot be opened for appending: No such file or directory"),
    ],
)
def test_each_kind_of_mistake_is_one_line_naming_file_section_and_key(tmp_path, changes, expected):
    path = write_config(tmp_path, changes)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[tokenmap]\n8000 = a:1\n0100 = b:1\nffff = c:1\n", "bound 0100 is out of order"),
        ("[tokenmap]\n8000 = a:1\n", "the last bound is 8000, it must be ffff"),
        ("[tokenmap]\nzzzz = a:1\nffff = b:1\n", "bound 'zzzz' is not four hex digits"),
        ("[tokenmap]\n8000 = a:1\n8000 = a:2\nffff = b:1\n", "map.ini: [tokenmap] 8000 is duplicated"),
    ],
)
def test_bad_token_map_names_the_tokenmap_key(tmp_path, content, expected):
    tokenmap = tmp_path / "map.ini"
    tokenmap.write_text(content)
    path = write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): str(tokenmap)})
    with pytest.raises(ConfigError, match=r"\[shards\] tokenmap: ") as caught:
        load_config(path)
    assert expected in str(caught.value)


def test_missing_file_and_broken_ini(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "absent.ini"))
    broken = tmp_path / "broken.ini"
    broken.write_text("listen = tcp:8080\n")
    with pytest.raises(ConfigError, match="broken.ini: File contains no section headers"):
        load_config(str(broken))


def test_a_key_given_twice_is_refused_not_silently_overridden(tmp_path):
    path = tmp_path / "twice.ini"
    path.write_text("[edge]\nlisten = tcp:8080\nlisten = tcp:9090\n")
    with pytest.raises(ConfigError, match=r"twice.ini: \[edge\] listen is duplicated"):
        load_config(str(path))


def test_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes("[edge]\nhostnames = caf\xe9.example\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.ini: not UTF-8 text"):
        load_config(str(path))


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path):
    (tmp_path / "originals").mkdir()
    config = load_config(write_config(tmp_path, {("local", "root"): "originals"}))
    assert config.local.root == str(tmp_path / "originals")


@pytest.mark.parametrize("raw, value", [("4096", 4096), ("64KiB", 65536), ("1 GiB", 1 << 30), ("7B", 7)])
def test_sizes(raw, value):
    assert parse_size(raw) == value


@pytest.mark.parametrize("raw, value", [(None, "-"), ("-", "-"), ("off", None)])
def test_the_access_log_goes_to_standard_output_unless_told_otherwise(tmp_path, raw, value):
    """
    README: `access_log = -`, standard output (journald under systemd), is the default;
    yet a config without [log] logged no request at all.
    """
    changes = {("log", "access_log"): raw} if raw is not None else {}
    assert load_config(write_config(tmp_path, changes)).log.access_log == value


@pytest.mark.parametrize(
    "listen, missing",
    [("systemd:domain=INET:index=0", "at index 0"), ("systemd:domain=INET:name=edgeproxy-http", "named 'edgeproxy-http'")],
)
def test_a_systemd_socket_that_systemd_did_not_pass_is_named(tmp_path, monkeypatch, listen, missing):
    """
    Started without its socket unit, the proxy said only `... is not a server endpoint:
    list index out of range` (or the bare socket name): now which socket is missing, what
    systemd passed, and where the socket comes from.
    """
    for key in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
        monkeypatch.delenv(key, raising=False)
    path = write_config(tmp_path, {("edge", "listen"): listen})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: [edge] listen: {listen!r}: systemd passed no socket {missing} (LISTEN_FDS unset, LISTEN_FDNAMES unset): "
        "start edgeproxy through its socket unit (systemd/edgeproxy.socket)"
    )


@pytest.mark.parametrize("raw, value", [(None, 0), ("auto", 0), ("1", 1), ("8", 8)])
def test_workers(tmp_path, raw, value):
    """0 means one per CPU; the bundled file says auto."""
    assert load_config(write_config(tmp_path, {("edge", "workers"): raw})).edge.workers == value


def test_a_worker_does_not_parse_inherited_endpoints(tmp_path):
    """A systemd: endpoint only parses in the process systemd handed the socket to."""
    path = write_config(tmp_path, {("edge", "listen"): "systemd:domain=INET:name=nothing-here"})
    with pytest.raises(ConfigError):
        load_config(path)
    assert load_config(path, inherited_listeners=True).edge.listen == ("systemd:domain=INET:name=nothing-here",)


@pytest.mark.parametrize("raw, value", [("250ms", 0.25), ("10s", 10.0), ("2min", 120.0), ("1.5", 1.5)])
def test_durations(raw, value):
    assert parse_duration(raw) == value


def test_origin_health_and_hedging_keys(tmp_path):
    config = load_config(write_config(tmp_path, {("origins", "down_after"): "7", ("origins", "hedge_after"): "off"}))
    assert config.origins.health == HealthPolicy(down_after=7, down_for=2.0, max_down_for=60.0)
    assert config.origins.hedge is None
    config = load_config(write_config(tmp_path, {("origins", "hedge_after"): "80ms"}))
    assert (config.origins.hedge.after, config.origins.hedge.share) == (0.08, 0.05)
    with pytest.raises(ConfigError, match=r"\[origins\] hedge_after: 'soon' is not a positive duration"):
        load_config(write_config(tmp_path, {("origins", "hedge_after"): "soon"}))


def test_previous_token_map_is_loaded_and_checked(tmp_path):
    (tmp_path / "old.ini").write_text("[tokenmap]\nffff = old-a:80 old-b:80\n")
    config = load_config(write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "previous"): "old.ini"}))
    assert config.shards.previous.owner(0) == ("old-a:80", "old-b:80")
    (tmp_path / "old.ini").write_text("[tokenmap]\n0100 = a:80\n")
    with pytest.raises(ConfigError, match=r"\[shards\] previous: .*old.ini: the last bound is 0100"):
        load_config(write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "previous"): "old.ini"}))
def test_the_shards_section_alone_is_read_as_the_file_says_now_and_checked_as_at_start_up(tmp_path):
    """What SIGHUP reads: a misspelt key is refused, not taken for a missing `previous`."""
    (tmp_path / "old.ini").write_text("[tokenmap]\nffff = old-a:80 old-b:80\n")
    path = write_config(tmp_path, {("shards", "previous"): "old.ini"})
    assert load_shards(path).previous.owner(0) == ("old-a:80", "old-b:80")
    write_config(tmp_path, {("shards", "previos"): "old.ini"})
    with pytest.raises(ConfigError, match=r"\[shards\] previos: unknown key"):
        load_shards(path)


def test_a_worker_started_after_a_reload_gets_its_maps_and_every_other_key_as_at_start(tmp_path):
    """What a supervisor gives a worker it starts after SIGHUP; the maps' paths stay relative to the file's folder."""
    (tmp_path / "old.ini").write_text("[tokenmap]\nffff = old-a:80 old-b:80\n")
    (tmp_path / "new.ini").write_text("[tokenmap]\nffff = new-a:80 new-b:80\n")
    path = write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): "old.ini", ("shards", "previous"): "old.ini"})
    started = load_config(path)
    write_config(tmp_path, {("origins", "chain"): "shards", ("shards", "tokenmap"): "new.ini", ("cache", "memory_bytes"): "1GiB"})
    given = load_config(path, text=with_reloaded_maps(started.text, path))
    assert given.shards.tokenmap.owner(0) == ("new-a:80", "new-b:80")
    assert given.shards.previous is None
    assert given.cache.memory_bytes == 64 << 20


S3_REGIONS = {
    ("origins", "chain"): "shards s3",
    ("s3", "regions"): "east west",
    ("s3:east", "endpoint"): "http://127.0.0.1:9000/",
    ("s3:east", "bucket"): "images-east",
    ("s3:east", "region"): "us-east-1",
    ("s3:east", "credentials"): "static",
    ("s3:east", "access_key"): "AKIAEXAMPLE",
    ("s3:east", "secret_key"): "secret",
    ("s3:west", "endpoint"): "http://s3.eu-west-1.amazonaws.com",
    ("s3:west", "bucket"): "images.west",
    ("s3:west", "region"): "eu-west-1",
}


def test_s3_regions_load_in_their_order_with_defaults(tmp_path):
    config = load_config(write_config(tmp_path, S3_REGIONS))
    assert config.origins.chain == ("shards", "s3")
    east, west = config.s3
    assert (east.name, east.endpoint, east.credentials, east.access_key) == ("east", "http://127.0.0.1:9000", "static", "AKIAEXAMPLE")
    assert (west.name, west.bucket, west.region, west.credentials) == ("west", "images.west", "eu-west-1", "chain")
    assert west.key_template == "{p6}/{hash}.{ext}"


def test_anonymous_needs_no_signing_region(tmp_path):
    changes = {**S3_REGIONS, ("s3:west", "credentials"): "anonymous", ("s3:west", "region"): None}
    assert load_config(write_config(tmp_path, changes)).s3[1].credentials == "anonymous"


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({("s3", "regions"): "west"}, "[s3:east]: unknown section (a region section must be listed in [s3] regions)"),
        ({("s3:south", "bucket"): "images"}, "[s3:south]: unknown section"),
        ({("s3:east", "endpiont"): "http://x"}, "[s3:east] endpiont: unknown key"),
        ({("s3", "regions"): "east west north"}, "[s3] regions: region 'north' has no [s3:north] section"),
        ({("s3", "regions"): "east west east"}, "[s3] regions: a region is listed twice"),
        ({("s3", "regions"): "east west Bad!"}, "[s3] regions: 'Bad!' is not a region name"),
        ({("s3:east", "endpoint"): None}, "[s3:east] endpoint: missing (required)"),
        ({("s3:east", "endpoint"): "ftp://s3.amazonaws.com"}, "[s3:east] endpoint: 'ftp://s3.amazonaws.com' is not an endpoint like https://"),
        ({("s3:east", "endpoint"): "http://127.0.0.1:99999"}, "[s3:east] endpoint: 'http://127.0.0.1:99999' is not an endpoint"),
        ({("s3:east", "endpoint"): "http://s3.amazonaws.com/images"}, "[s3:east] endpoint: 'http://s3.amazonaws.com/images' is not"),
        ({("s3:east", "bucket"): "Images"}, "[s3:east] bucket: 'Images' is not a bucket name"),
        ({("s3:east", "credentials"): "iam"}, "[s3:east] credentials: 'iam' is not one of chain, static, anonymous"),
        ({("s3:east", "secret_key"): None}, "[s3:east] secret_key: missing (required with credentials = static)"),
        ({("s3:west", "access_key"): "AKIA"}, "[s3:west] access_key: only used with credentials = static, not chain"),
        ({("s3:west", "region"): None}, "[s3:west] region: missing (required to sign requests)"),
        ({("s3:west", "region"): "EU West"}, "[s3:west] region: 'EU West' is not a region name like eu-west-1"),
        ({("s3:east", "key_template"): "{p6}/{name}.jpg"}, "[s3:east] key_template: unknown field {name}"),
        ({("s3:east", "key_template"): "{p6}/{hash} copy.{ext}"}, "[s3:east] key_template: '{p6}/{hash} copy.{ext}' may only use letters"),
        ({("s3:east", "key_template"): "/{hash}.{ext}"}, "[s3:east] key_template: '/{hash}.{ext}' starts with /"),
        ({("origins", "chain"): "shards s4"}, "[origins] chain: 's4' is not one of local, shards, s3"),
    ],
)
def test_each_s3_mistake_is_one_line_naming_file_section_and_key(tmp_path, changes, expected):
    path = write_config(tmp_path, {**S3_REGIONS, **changes})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_bundled_s3_example_is_valid(tmp_path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "conf" / "edgeproxy.ini")
    parser["origins"]["chain"] = "s3"
    path = tmp_path / "edgeproxy.ini"
    with open(path, "w") as handle:
        parser.write(handle)
    assert [region.name for region in load_config(str(path)).s3] == parser["s3"]["regions"].split()
