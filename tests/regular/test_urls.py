"""sam2plus.urls: the URL policy, decided without any network (the fetches are in test_fetch.py)."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pytest

from sam2plus import transport
from sam2plus.errors import RequestError
from sam2plus.urls import (
    HostRule,
    UrlPolicy,
    embedded_ipv4,
    is_cloud_uri,
    is_public_address,
    parse_data_url,
    parse_host_rule,
    parse_origin,
)

FIELD = "tasks[0].data.image"
LS = "http://ls.example:8080"


def policy(hosts=(), ls=LS, block_private=True) -> UrlPolicy:
    return UrlPolicy(ls, hosts, block_private)


def refusal(call) -> str:
    with pytest.raises(RequestError) as caught:
        call()
    assert caught.value.status == 400 and caught.value.field == FIELD, caught.value
    return str(caught.value)


# -- Label Studio paths --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, url, immutable",
    [
        ("/data/upload/3/abc-cat.png", "http://ls.example:8080/data/upload/3/abc-cat.png", True),
        ("/data/upload/3/my cat ü.png", "http://ls.example:8080/data/upload/3/my%20cat%20%C3%BC.png", True),
        ("/data/local-files/?d=dir/a%20b.png", "http://ls.example:8080/data/local-files/?d=dir/a%20b.png", False),
        (
            "/storage-data/uploaded/?filepath=upload/3/x.png",
            "http://ls.example:8080/storage-data/uploaded/?filepath=upload/3/x.png",
            False,
        ),
        ("/tasks/12/presign/?fileuri=czM6Ly9i", "http://ls.example:8080/tasks/12/presign/?fileuri=czM6Ly9i", False),
        ("/tasks/12/resolve/?fileuri=czM6Ly9i", "http://ls.example:8080/tasks/12/resolve/?fileuri=czM6Ly9i", False),
        ("http://LS.example:8080/data/upload/1/a.png", "http://ls.example:8080/data/upload/1/a.png", True),
    ],
)
def test_label_studio_file_paths_carry_the_key(value, url, immutable):
    target = policy().task_target(value, FIELD)
    assert (target.url, target.label_studio, target.public_only, target.immutable) == (url, True, False, immutable)
    assert target.via_label_studio and target.netloc == "ls.example:8080"


@pytest.mark.parametrize(
    "value",
    [
        "/http://127.0.0.1:9/steal.png",  # finding 1: urljoin returned the absolute URL
        "/data/upload/../../api/projects/",  # finding 12: normalised into the API
        "/data/upload/1/../../../api/projects/",
        "/data/upload/%2e%2e/%2e%2e/api/projects/",
        "/data/upload/%2E%2E%2F%2E%2E%2Fapi/projects/",
        "/data/upload/./1/a.png",
        "/data/upload/1/a.png/..",
        "/api/projects/",
        "/api/projects/1/export?exportType=JSON",
        "/api/token/refresh/",
        "/user/login/",
        "/tasks/1/presign/x",
        "/tasks/x/presign/",
        "/tasks/1/annotations/",
        "/projects/1/",
        "/data/upload/",
        "/storage-data/",
        "/data/avatars/a.png",
        "/",
        "/?d=/data/upload/1/a.png",
        "http://ls.example:8080/api/projects/",
        "http://ls.example:8080/data/upload/%2e%2e/api/projects/",
    ],
)
def test_other_label_studio_paths_are_refused(value):
    message = refusal(lambda: policy().task_target(value, FIELD))
    assert "Label Studio" in message


@pytest.mark.parametrize(
    "value",
    [
        "http://ATTACKER\\@ls.example:8080/data/upload/1/x.png",  # finding 2: urllib3 connects to ATTACKER
        "http://attacker.example\\@allowed.example/x.png",
        "/data/upload/1/x.png\\..\\..\\api",
        "http://allowed.example/x\\y.png",
        "http://allowed.example/x\ny.png",
        "http://allowed.example/x\ty.png",
        "/data/upload/1/a\x00.png",
        "http://allowed.example/x\x7f.png",
        "s3://bucket/a\r\n.png",
    ],
)
def test_backslashes_and_control_characters_are_refused(value):
    message = refusal(lambda: policy(("allowed.example",)).task_target(value, FIELD, 1))
    assert "backslashes and control characters" in message


@pytest.mark.parametrize(
    "value", ["http://user:pw@ls.example:8080/data/upload/1/x.png", "http://allowed.example@attacker.example/x.png"]
)
def test_user_info_is_refused(value):
    assert "user-info" in refusal(lambda: policy(("allowed.example", "attacker.example")).task_target(value, FIELD))


def test_label_studio_origin_is_exact():
    """Another scheme or port of Label Studio's host is not Label Studio (and gets no key)."""
    p = policy(("ls.example",))
    for value in (
        "https://ls.example:8080/data/upload/1/a.png",
        "http://ls.example/data/upload/1/a.png",
        "http://ls.example:8081/data/upload/1/a.png",
    ):
        target = p.task_target(value, FIELD)
        assert not target.label_studio and not target.via_label_studio, value
    refusal(lambda: p.task_target("http://ls.example.:8080/data/upload/1/a.png", FIELD))  # not the same name


def test_label_studio_under_a_base_path():
    p = policy(ls="https://example.org/label-studio/")
    target = p.task_target("/data/upload/1/a.png", FIELD)
    assert target.url == "https://example.org/label-studio/data/upload/1/a.png" and target.port == 443
    assert p.task_target("https://example.org/label-studio/data/upload/1/a.png", FIELD).label_studio
    refusal(lambda: p.task_target("https://example.org/data/upload/1/a.png", FIELD))


def test_label_studio_paths_need_label_studio_url():
    message = refusal(lambda: policy(ls=None).task_target("/data/upload/1/a.png", FIELD))
    assert "LABEL_STUDIO_URL is not set" in message


# -- cloud storage URIs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri", ["s3://bucket/a.png", "gs://bucket/dir/a b ü.jpg", "azure-blob://container/x.tif", "s3:bucket/legacy.png"]
)
def test_cloud_uris_go_to_label_studios_presign_endpoint(uri):
    assert is_cloud_uri(uri)
    target = policy().task_target(uri, FIELD, 5)
    prefix = "http://ls.example:8080/tasks/5/presign/?fileuri="
    assert target.url.startswith(prefix) and target.label_studio and not target.immutable
    assert base64.urlsafe_b64decode(target.url[len(prefix) :]).decode() == uri


def test_cloud_uris_need_label_studio_and_a_task_id():
    assert "LABEL_STUDIO_URL is not set" in refusal(lambda: policy(ls=None).task_target("s3://b/a.png", FIELD, 5))
    for task_id in (None, 0, -3, "x", "", True, 2.0, "²", "0", " 7"):
        assert "task has no id" in refusal(lambda task_id=task_id: policy().task_target("s3://b/a.png", FIELD, task_id))
    assert policy().task_target("gs://b/a.png", FIELD, "7").url.startswith(f"{LS}/tasks/7/presign/")


# -- IMAGE_HOSTS ---------------------------------------------------------------------------------
def test_image_hosts_by_name_and_port():
    p = policy(("images.example", "cdn.example:8443", "[::1]:9000", "10.0.0.5"))
    for value, port in (
        ("http://images.example/a.png", 80),
        ("https://IMAGES.example:444/a.png", 444),
        ("https://cdn.example:8443/a.png", 8443),
        ("http://[::1]:9000/a.png", 9000),
        ("http://10.0.0.5:81/a.png", 81),
    ):
        target = p.task_target(value, FIELD)
        assert target.port == port and not target.label_studio and not target.public_only, value
    for value in (
        "https://cdn.example/a.png",
        "http://cdn.example:8080/a.png",
        "http://images.example.evil/a.png",
        "http://evil.example/images.example/a.png",
        "http://[::1]:9001/a.png",
    ):
        message = refusal(lambda value=value: p.task_target(value, FIELD))
        assert "not Label Studio's and not in IMAGE_HOSTS" in message, value


def test_star_allows_any_host_but_names_none():
    target = policy(("*",)).task_target("http://anything.example:1234/a.png", FIELD)
    assert target.public_only and not target.label_studio
    assert not policy(("*",), block_private=False).task_target("http://anything.example/a.png", FIELD).public_only
    # * does not open Label Studio's API
    refusal(lambda: policy(("*",)).task_target(f"{LS}/api/projects/", FIELD))


@pytest.mark.parametrize(
    "value",
    [
        "ftp://images.example/a.png",
        "//images.example/a.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "images.example/a.png",
    ],
)
def test_only_http_and_https(value):
    assert "scheme" in refusal(lambda: policy(("*",)).task_target(value, FIELD))


@pytest.mark.parametrize(
    "value",
    ["http://images.example:99999/a.png", "http://images.example:0/a.png", "http:///a.png", "http://[::1/a.png"],
)
def test_malformed_urls(value):
    refusal(lambda: policy(("*",)).task_target(value, FIELD))


# -- redirects -----------------------------------------------------------------------------------
def test_redirects_from_label_studio_go_anywhere_without_the_key():
    p = policy(("minio.local:9000",))
    start = p.task_target("s3://b/a.png", FIELD, 1)
    hop = p.redirect(start, "https://bucket.s3.amazonaws.com/a.png?X-Amz-Signature=x", FIELD)
    assert (hop.host, hop.port, hop.label_studio, hop.via_label_studio, hop.public_only) == (
        "bucket.s3.amazonaws.com",
        443,
        False,
        True,
        True,
    )
    named = p.redirect(start, "http://minio.local:9000/b/a.png", FIELD)
    assert not named.label_studio and not named.public_only
    back = p.redirect(start, "/data/upload/1/a.png", FIELD)
    assert back.label_studio and back.url == f"{LS}/data/upload/1/a.png"
    message = refusal(lambda: p.redirect(start, "/api/projects/", FIELD))
    assert "redirects to" in message and "/api/projects/" in message


def test_redirects_from_image_hosts_stay_in_image_hosts():
    p = policy(("images.example", "cdn.example"))
    start = p.task_target("http://images.example/a.png", FIELD)
    assert p.redirect(start, "https://cdn.example/a.png", FIELD).host == "cdn.example"
    assert p.redirect(start, "b.png", FIELD).url == "http://images.example/b.png"
    message = refusal(lambda: p.redirect(start, "http://169.254.169.254/latest/meta-data/", FIELD))
    assert '"http://images.example/a.png" redirects to' in message and "169.254.169.254:80" in message
    # a redirect onto Label Studio's host from elsewhere carries no key (and needs IMAGE_HOSTS)
    refusal(lambda: p.redirect(start, f"{LS}/data/upload/1/a.png", FIELD))
    star = policy(("*",))
    hop = star.redirect(star.task_target("http://images.example/a.png", FIELD), f"{LS}/data/upload/1/a.png", FIELD)
    assert not hop.label_studio and not hop.via_label_studio


@pytest.mark.parametrize(
    "location",
    [
        f"{LS}/api/projects/",
        f"{LS}/api/tasks/1/",
        f"{LS}/",
        f"{LS}/data/upload/../../api/projects/",
        f"{LS}/data/upload/%2e%2e/%2e%2e/api/projects/",
        f"{LS}/user/login/",
    ],
)
@pytest.mark.parametrize("hosts", [("*",), ("*", "ls.example:8080"), ("images.example", "ls.example")])
def test_redirects_from_image_hosts_keep_label_studios_path_rule(location, hosts):
    """`*` (or naming Label Studio's host in IMAGE_HOSTS) never opens Label Studio's host beyond its
    file paths, for a task's URL and for every redirect hop alike."""
    p = policy(hosts)
    start = p.task_target("http://images.example/a.png", FIELD)
    message = refusal(lambda: p.redirect(start, location, FIELD))
    assert "redirects to" in message and "Label Studio" in message
    refusal(lambda: p.task_target(location, FIELD))


@pytest.mark.parametrize(
    "location",
    [
        "http://a\\@images.example/x",
        "http://images.example/\tx",
        "ftp://images.example/x",
        "http://u:p@images.example/x",
    ],
)
def test_malformed_redirects(location):
    p = policy(("*",))
    refusal(lambda: p.redirect(p.task_target("http://images.example/a.png", FIELD), location, FIELD))


# -- settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry, rule",
    [
        ("images.example", HostRule("images.example", None)),
        (" CDN.example:8443 ", HostRule("cdn.example", 8443)),
        ("[::1]:9000", HostRule("::1", 9000)),
        ("10.1.2.3", HostRule("10.1.2.3", None)),
    ],
)
def test_host_rules(entry, rule):
    assert parse_host_rule(entry) == rule


@pytest.mark.parametrize(
    "entry",
    [
        "http://images.example",
        "images.example/x",
        "user@images.example",
        "a b",
        "*.example.org",
        "images.example:0",
        "images.example:99999",
        "a\\b",
        "",
    ],
)
def test_bad_host_rules(entry):
    with pytest.raises(ValueError):
        parse_host_rule(entry)


def test_origins():
    origin = parse_origin("HTTPS://LS.example/base/")
    assert (origin.scheme, origin.host, origin.port, origin.base_path, origin.url) == (
        "https",
        "ls.example",
        443,
        "/base",
        "https://ls.example/base",
    )
    for bad in ("ls.example:8080", "ftp://ls.example", "http://u:p@ls.example", "http://ls.example/?x=1", "http://"):
        with pytest.raises(ValueError):
            parse_origin(bad)


# Teredo addresses: 2001:0:<server>:<flags>:<port>:<client XOR ffff:ffff>
TEREDO_PUBLIC = "2001:0:4136:e378:8000:63bf:f7f7:f7f7"  # server 65.54.227.120, client 8.8.8.8
TEREDO_PRIVATE_CLIENT = "2001:0:4136:e378:8000:63bf:f5ff:fffe"  # client 10.0.0.1
TEREDO_PRIVATE_SERVER = "2001:0:a00:1:8000:63bf:f7f7:f7f7"  # server 10.0.0.1
TEREDO_LOOPBACK_CLIENT = "2001:0:4136:e378:8000:63bf:80ff:fffe"  # client 127.0.0.1


@pytest.mark.parametrize(
    "address, public, carried",
    [
        # IPv4
        ("8.8.8.8", True, None),
        ("1.1.1.1", True, None),
        ("0.0.0.0", False, None),
        ("0.1.2.3", False, None),
        ("10.1.2.3", False, None),
        ("100.64.0.1", False, None),
        ("100.127.255.254", False, None),
        ("100.128.0.1", True, None),
        ("127.0.0.1", False, None),
        ("127.8.9.10", False, None),
        ("169.254.169.254", False, None),
        ("172.16.0.1", False, None),
        ("172.32.0.1", True, None),
        ("192.0.0.8", False, None),
        ("192.0.2.1", False, None),
        ("192.88.99.1", False, None),
        ("192.168.1.1", False, None),
        ("198.18.0.1", False, None),
        ("198.51.100.7", False, None),
        ("203.0.113.7", False, None),
        ("224.0.0.1", False, None),
        ("239.255.255.250", False, None),
        ("240.0.0.1", False, None),
        ("255.255.255.255", False, None),
        # IPv6 on its own
        ("2001:4860:4860::8888", True, ()),
        ("2606:4700:4700::1111", True, ()),
        ("::", False, ("0.0.0.0",)),
        ("::1", False, ("0.0.0.1",)),
        ("fe80::1%eth0", False, ()),
        ("fec0::1", False, ()),  # site-local (deprecated)
        ("fc00::1", False, ()),  # unique-local
        ("fd00::1", False, ()),
        ("ff02::1", False, ()),  # multicast
        ("ff0e::1", False, ()),
        ("100::1", False, ()),  # discard-only
        ("2001:db8::1", False, ()),  # documentation
        ("3fff::1", False, ()),
        ("2001:2::1", False, ()),  # benchmarking
        ("2001:10::1", False, ()),  # ORCHID
        ("2001:20::1", False, ()),  # ORCHIDv2: IETF protocol assignments, no image host
        ("5f00::1", False, ()),  # SRv6 SIDs
        ("4000::1", False, ()),  # unassigned, outside 2000::/3
        ("64:ff9b:1::a00:1", False, ()),  # local-use NAT64
        ("64:ff9b:1::808:808", False, ()),
        # IPv4-mapped
        ("::ffff:127.0.0.1", False, ("127.0.0.1",)),
        ("::ffff:10.0.0.1", False, ("10.0.0.1",)),
        ("::ffff:100.64.0.1", False, ("100.64.0.1",)),
        ("::ffff:224.0.0.1", False, ("224.0.0.1",)),
        ("::ffff:8.8.8.8", True, ("8.8.8.8",)),
        # IPv4-translated (SIIT)
        ("::ffff:0:127.0.0.1", False, ("127.0.0.1",)),
        ("::ffff:0:8.8.8.8", True, ("8.8.8.8",)),
        # IPv4-compatible (deprecated)
        ("::127.0.0.1", False, ("127.0.0.1",)),
        ("::10.0.0.1", False, ("10.0.0.1",)),
        ("::169.254.169.254", False, ("169.254.169.254",)),
        ("::8.8.8.8", True, ("8.8.8.8",)),
        # NAT64, well-known prefix
        ("64:ff9b::127.0.0.1", False, ("127.0.0.1",)),
        ("64:ff9b::a9fe:a9fe", False, ("169.254.169.254",)),
        ("64:ff9b::192.168.0.1", False, ("192.168.0.1",)),
        ("64:ff9b::8.8.8.8", True, ("8.8.8.8",)),
        # 6to4
        ("2002:7f00:1::1", False, ("127.0.0.1",)),
        ("2002:a00:1::1", False, ("10.0.0.1",)),
        ("2002:c0a8:101::1", False, ("192.168.1.1",)),
        ("2002:808:808::1", True, ("8.8.8.8",)),
        # Teredo: server and client
        (TEREDO_PUBLIC, True, ("65.54.227.120", "8.8.8.8")),
        (TEREDO_PRIVATE_CLIENT, False, ("65.54.227.120", "10.0.0.1")),
        (TEREDO_PRIVATE_SERVER, False, ("10.0.0.1", "8.8.8.8")),
        (TEREDO_LOOPBACK_CLIENT, False, ("65.54.227.120", "127.0.0.1")),
        # ISATAP: a public prefix with the site's IPv4 address in its interface identifier
        ("2001:4860:0:1::5efe:10.0.0.1", False, ("10.0.0.1",)),
        ("2001:4860:0:1:200:5efe:127.0.0.1", False, ("127.0.0.1",)),
        ("2001:4860:0:1::5efe:8.8.8.8", True, ("8.8.8.8",)),
        ("fd00::5efe:8.8.8.8", False, ("8.8.8.8",)),  # a private prefix stays private
    ],
)
def test_public_addresses(address, public, carried):
    """One classification for every address a host resolves to (transport.py connects through
    it): IPv6 forms that carry IPv4 addresses are judged by what they carry, reserved ranges
    are refused."""
    assert is_public_address(address) is public
    if carried is not None:
        ip = ipaddress.ip_address(address.split("%")[0])
        assert tuple(str(inner) for inner in embedded_ipv4(ip)) == carried


def test_transport_classifies_addresses_only_through_urls():
    """transport.py has no classification of its own: the one function decides."""
    source = Path(transport.__file__).read_text()
    assert "is_public_address(address)" in source
    assert "ipaddress" not in source and ".is_global" not in source and ".is_private" not in source


def test_data_url_size_is_checked_before_decoding():
    body = b"x" * 300
    encoded = f"data:image/png;base64,{base64.b64encode(body).decode()}"
    assert parse_data_url(encoded, FIELD, 300).body == body
    with pytest.raises(RequestError) as caught:
        parse_data_url(encoded, FIELD, 299)
    assert caught.value.status == 413 and "300 bytes" in str(caught.value)
    raw = b"\xfb\xff" * 10  # base64 with + and /, sent in the URL-safe alphabet
    assert parse_data_url("data:image/png;base64," + base64.urlsafe_b64encode(raw).decode(), FIELD, 100).body == raw


# -- the backend's settings for it ---------------------------------------------------------------
def test_settings_defaults_block_private_addresses_and_bound_downloads():
    from sam2plus.config import ServerConfig

    config = ServerConfig.from_env({})
    assert config.image_hosts_block_private is True and config.download_cache_mb == 10240
    config = ServerConfig.from_env(
        {"IMAGE_HOSTS_BLOCK_PRIVATE": "false", "DOWNLOAD_CACHE_MB": "64", "IMAGE_HOSTS": "*, minio:9000"}
    )
    assert config.image_hosts_block_private is False and config.download_cache_mb == 64
    assert config.image_hosts == ("*", "minio:9000")


@pytest.mark.parametrize(
    "env, named",
    [
        ({"IMAGE_HOSTS": "http://images.example"}, "IMAGE_HOSTS"),
        ({"IMAGE_HOSTS": "images.example, *.cdn.example"}, "IMAGE_HOSTS"),
        ({"LABEL_STUDIO_URL": "ls.example:8080"}, "LABEL_STUDIO_URL"),
        ({"LABEL_STUDIO_URL": "http://admin:pw@ls.example"}, "LABEL_STUDIO_URL"),
        ({"IMAGE_HOSTS_BLOCK_PRIVATE": "maybe"}, "IMAGE_HOSTS_BLOCK_PRIVATE"),
        ({"DOWNLOAD_CACHE_MB": "0"}, "DOWNLOAD_CACHE_MB"),
    ],
)
def test_bad_settings_stop_the_start_naming_them(env, named):
    from sam2plus.config import ConfigError, ServerConfig

    with pytest.raises(ConfigError, match=named):
        ServerConfig.from_env(env)
