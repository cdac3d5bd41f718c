"""What the backend may fetch: one policy for every URL, decided on urllib3's parse of it.

A task's image value becomes a `Target` here, and so does every redirect hop; the HTTP client
(`sam2plus.transport`) fetches nothing else. urllib3's `parse_url` is the parser the client
itself uses, so the scheme, host and port decided on are the ones connected to.

- Label Studio paths (`/data/upload/...`) are appended to LABEL_STUDIO_URL as strings, must
  end on Label Studio's exact scheme, host and port and on one of its file-serving paths; only
  these carry Label Studio's key. Cloud URIs (`s3://`, `gs://`, `azure-blob://`) become its
  `/tasks/<id>/presign/` URL.
- Other `http(s)` URLs must name a host of IMAGE_HOSTS (`*`: any host).
- Every redirect hop passes the rules of a task's URL: on Label Studio's origin only its file
  paths, whatever IMAGE_HOSTS says. Redirects from Label Studio may go to any host (presigned
  object-store URLs), without the key; redirects from IMAGE_HOSTS only to hosts IMAGE_HOSTS
  allows, and never with the key (a chain that began elsewhere does not steer keyed requests).
- With IMAGE_HOSTS_BLOCK_PRIVATE, a host not named in LABEL_STUDIO_URL or IMAGE_HOSTS is
  connected to only when every address it resolves to is public (`is_public_address`, the one
  classification of addresses, IPv6 forms carrying IPv4 addresses unwrapped).
- Backslashes, user-info and control characters are refused everywhere.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import unquote, urljoin

from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

from .errors import RequestError, describe

__all__ = [
    "CLOUD_PREFIXES",
    "DataUrl",
    "HostRule",
    "Origin",
    "Target",
    "UrlPolicy",
    "check_characters",
    "embedded_ipv4",
    "is_cloud_uri",
    "is_public_address",
    "parse_data_url",
    "parse_host_rule",
    "parse_origin",
]

# label-studio-sdk's is_cloud_storage_uri: the schemes of Label Studio's cloud import storages.
CLOUD_PREFIXES = ("s3:", "gs:", "azure-blob:")
# Label Studio 1.23.2's file-serving routes (below its base path): uploads, local files, uploads
# kept in cloud storage, and cloud URIs resolved for a task (the URI is in the query).
LABEL_STUDIO_FILES = re.compile(
    r"/(?:data/upload/.|data/local-files/|storage-data/uploaded/|tasks/\d+/(?:presign|resolve)/$)"
)
UPLOADS = "/data/upload/"
DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    """One URL the backend may request, and what goes with it."""

    url: str  # as urllib3 sends it
    host: str
    port: int
    label_studio: bool  # Label Studio's origin and a file path: its key goes along
    via_label_studio: bool  # the chain began at Label Studio: redirects may go to any host
    public_only: bool  # connect only when every address of the host is public
    immutable: bool = False  # a Label Studio upload: its name is unique, its content never changes

    @property
    def netloc(self) -> str:
        return _netloc(self.host, self.port)


@dataclass(frozen=True)
class HostRule:
    """An IMAGE_HOSTS entry: a host name or address, and a port (None: any port)."""

    host: str
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        return host == self.host and self.port in (None, port)


def parse_host_rule(entry: str) -> HostRule:
    """`host`, `host:port` or `[v6]:port` -> HostRule; ValueError when it is anything else."""
    entry = entry.strip().lower()
    try:
        url = parse_url(f"http://{entry}")
    except LocationParseError:
        url = None
    if (
        url is None
        or not url.host
        or url.auth
        or url.path
        or url.query
        or url.fragment
        or "\\" in entry
        or "*" in entry
        or _CONTROL.search(entry)
        or url.port == 0
    ):
        raise ValueError(f"{entry!r} is not host or host:port")
    return HostRule(url.host.strip("[]"), url.port)


@dataclass(frozen=True)
class Origin:
    """LABEL_STUDIO_URL: scheme, host, port and the path Label Studio is served under."""

    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/prefix"
    url: str  # scheme://host[:port][/prefix], no trailing slash


def parse_origin(url: str) -> Origin:
    """LABEL_STUDIO_URL -> Origin; ValueError unless it is http(s)://host[:port][/path]."""
    try:
        parsed = parse_url(url.strip())
    except LocationParseError:
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in DEFAULT_PORTS
        or not parsed.host
        or parsed.auth
        or parsed.query
        or parsed.fragment
        or "\\" in url
        or _CONTROL.search(url)
        or parsed.port == 0
    ):
        raise ValueError(f"{url!r} is not http(s)://host[:port][/path]")
    base = (parsed.path or "").rstrip("/")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    return Origin(
        parsed.scheme,
        parsed.host.strip("[]"),
        port,
        base,
        Url(parsed.scheme, host=parsed.host, port=parsed.port, path=base or None).url,
    )


def is_cloud_uri(value: str) -> bool:
    return value.startswith(CLOUD_PREFIXES)


class UrlPolicy:
    """Decides, for task image values and redirect hops, whether and how a URL is requested."""

    def __init__(
        self, label_studio_url: str | None = None, image_hosts: tuple[str, ...] = (), block_private: bool = True
    ):
        self.label_studio = parse_origin(label_studio_url) if label_studio_url else None
        self.any_host = "*" in image_hosts
        self.rules = tuple(parse_host_rule(entry) for entry in image_hosts if entry.strip() != "*")
        self.block_private = block_private

    # -- task values ----------------------------------------------------------------------------
    def task_target(self, value: str, field: str, task_id=None) -> Target:
        """The first URL to request for a task's image value (a cloud URI, a Label Studio path
        or an http(s) URL); a RequestError naming `field` when the value may not be fetched."""
        check_characters(value, field)
        if is_cloud_uri(value):
            return self._presign(value, field, task_id)
        if value.startswith("/") and not value.startswith("//"):
            return self._label_studio_path(value, field)
        url = self._parse(value, field)
        return self._on_label_studio(url, value, field) or self._image_host(url, value, field)

    def redirect(self, source: Target, location: str, field: str) -> Target:
        """The next hop when `source` answers with a redirect to `location`: the rules of a task's
        URL, Label Studio's path rule included; only a chain that began at Label Studio may leave
        for any host, and only such a chain takes the key back onto Label Studio's file paths."""
        what = f"{describe(source.url)} redirects to {describe(location)}"
        check_characters(location, field, what)
        joined = urljoin(source.url, location)
        check_characters(joined, field, what)
        url = self._parse(joined, field, what)
        if source.via_label_studio:
            return self._on_label_studio(url, joined, field, what) or self._elsewhere(url, via_label_studio=True)
        self._label_studio_file(url, joined, field, what)  # refuses Label Studio's other paths, even with `*`
        host, port = _host_port(url)
        if not self._allowed_image_host(host, port):
            raise RequestError(
                field, f"{what}: host {_netloc(host, port)!r} is not in IMAGE_HOSTS, so the redirect is not followed"
            )
        return self._elsewhere(url, via_label_studio=False)

    # -- Label Studio ---------------------------------------------------------------------------
    def _presign(self, uri: str, field: str, task_id) -> Target:
        if self.label_studio is None:
            raise RequestError(
                field,
                f"{describe(uri)} is a cloud storage URI, resolved through Label Studio, "
                "but LABEL_STUDIO_URL is not set",
            )
        number = str(task_id) if isinstance(task_id, (int, str)) and not isinstance(task_id, bool) else ""
        if not re.fullmatch(r"[0-9]+", number) or int(number) == 0:
            raise RequestError(
                field,
                f"{describe(uri)} is a cloud storage URI, resolved through Label Studio's "
                f"/tasks/<id>/presign/, but the task has no id (got {describe(task_id)})",
            )
        fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
        return self._label_studio_path(f"/tasks/{int(number)}/presign/?fileuri={fileuri}", field)

    def _label_studio_path(self, path: str, field: str) -> Target:
        if self.label_studio is None:
            raise RequestError(field, f"{describe(path)} is a Label Studio path but LABEL_STUDIO_URL is not set")
        joined = self.label_studio.url + path
        target = self._on_label_studio(self._parse(joined, field), joined, field, describe(path))
        if target is None:  # the path moved the URL off Label Studio's origin
            raise RequestError(field, f"{describe(path)} does not stay on LABEL_STUDIO_URL's host")
        return target

    def _on_label_studio(self, url: Url, raw: str, field: str, what: str | None = None) -> Target | None:
        """The Target for a URL on Label Studio's exact origin, its key along (None when it is elsewhere)."""
        path = self._label_studio_file(url, raw, field, what)
        if path is None:
            return None
        host, port = _host_port(url)
        return Target(
            url.url,
            host,
            port,
            label_studio=True,
            via_label_studio=True,
            public_only=False,
            immutable=path.startswith(UPLOADS),
        )

    def _label_studio_file(self, url: Url, raw: str, field: str, what: str | None = None) -> str | None:
        """For a URL on Label Studio's exact origin, its path below the base path, which must be one
        of the file-serving paths, with no '.' or '..' segments, plain or percent-encoded (servers
        and proxies normalise them differently); None for a URL elsewhere."""
        ls = self.label_studio
        host, port = _host_port(url)
        if ls is None or (url.scheme, host, port) != (ls.scheme, ls.host, ls.port):
            return None
        path = url.path or "/"
        what = what or describe(raw)
        decoded = unquote(raw.split("?", 1)[0].split("#", 1)[0]) + "/" + unquote(path)
        if any(segment in (".", "..") for segment in decoded.split("/")) or "\\" in decoded or _CONTROL.search(decoded):
            raise RequestError(
                field,
                f"{what}: '.' and '..' segments, backslashes and control characters, plain "
                "or percent-encoded, are refused in Label Studio paths",
            )
        if not path.startswith(ls.base_path + "/") or not LABEL_STUDIO_FILES.match(path[len(ls.base_path) :]):
            raise RequestError(
                field,
                f"{what} is not one of Label Studio's file paths (/data/upload/, "
                "/data/local-files/, /storage-data/uploaded/, /tasks/<id>/presign/ or resolve/)",
            )
        return path[len(ls.base_path) :]

    # -- IMAGE_HOSTS ----------------------------------------------------------------------------
    def _image_host(self, url: Url, shown: str, field: str) -> Target:
        host, port = _host_port(url)
        if not self._allowed_image_host(host, port):
            where = "not Label Studio's and not in IMAGE_HOSTS" if self.label_studio else "not in IMAGE_HOSTS"
            raise RequestError(field, f"{describe(shown)}: host {_netloc(host, port)!r} is {where}")
        return self._elsewhere(url, via_label_studio=False)

    def _elsewhere(self, url: Url, via_label_studio: bool) -> Target:
        """A Target off Label Studio's file paths: no key goes along."""
        host, port = _host_port(url)
        return Target(
            url.url,
            host,
            port,
            label_studio=False,
            via_label_studio=via_label_studio,
            public_only=self._public_only(host, port),
        )

    def _allowed_image_host(self, host: str, port: int) -> bool:
        return self.any_host or any(rule.matches(host, port) for rule in self.rules)

    def _public_only(self, host: str, port: int) -> bool:
        """Whether the connection must check the host's addresses: hosts named in LABEL_STUDIO_URL
        (with its port) or in IMAGE_HOSTS are trusted with any address."""
        if not self.block_private:
            return False
        ls = self.label_studio
        if ls is not None and (host, port) == (ls.host, ls.port):
            return False
        return not any(rule.matches(host, port) for rule in self.rules)

    # -- parsing --------------------------------------------------------------------------------
    def _parse(self, text: str, field: str, what: str | None = None) -> Url:
        what = what or describe(text)
        try:
            url = parse_url(text)
        except LocationParseError:
            raise RequestError(field, f"{what} is not a valid URL") from None
        if url.scheme not in DEFAULT_PORTS:
            raise RequestError(
                field,
                f"unsupported URL scheme {url.scheme!r} in {what}: http(s) URLs, Label "
                "Studio paths, cloud storage URIs, data: URLs or files inside CACHE_DIR",
            )
        if url.auth is not None:
            raise RequestError(field, f"{what}: user-info (user:password@) in URLs is refused")
        if not url.host or url.port == 0:
            raise RequestError(field, f"{what} has no host")
        return url


def check_characters(value: str, field: str, what: str | None = None) -> None:
    """Refuse backslashes and control characters: parsers disagree about both."""
    if "\\" in value or _CONTROL.search(value):
        raise RequestError(field, f"{what or describe(value)}: backslashes and control characters are refused")


# IANA's IPv4 and IPv6 special-purpose address registries (2025), less their globally reachable
# entries, and multicast: no image host on the internet has one of these addresses.
NOT_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 included
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata services)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, 255.255.255.255 (broadcast) included
    )
)
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")  # outside it: loopback, unspecified, fc00::/7,
# fe80::/10, fec0::/10, ff00::/8, 100::/64, 64:ff9b:1::/48, 5f00::/16 and all that is unassigned
NOT_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF assignments: benchmarking 2001:2::/48, ORCHID... (Teredo 2001::/32 unwrapped)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_WRAPPERS_96 = (  # prefixes whose last 32 bits are an IPv4 address
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated); :: and ::1 become 0.0.0.x
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix
)
_ISATAP = (0x00005EFE, 0x02005EFE)  # the upper half of an ISATAP interface identifier


def is_public_address(address: str) -> bool:
    """Whether an address (as getaddrinfo gives it, a `%scope` allowed) is a public unicast one:
    IPv4 outside `NOT_PUBLIC_V4`; IPv6 inside global unicast 2000::/3 and outside `NOT_PUBLIC_V6`;
    an IPv6 form that carries IPv4 addresses (`embedded_ipv4`) is public only when every IPv4
    address it carries is (and, for ISATAP, its own prefix is)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 4:
        return not any(ip in network for network in NOT_PUBLIC_V4)
    wrapped = _wrapped_ipv4(ip)
    if wrapped:
        return all(is_public_address(str(inner)) for inner in wrapped)
    return _is_public_v6(ip) and all(is_public_address(str(inner)) for inner in _isatap_ipv4(ip))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries, () for none: IPv4-mapped, -translated and
    -compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16), Teredo (2001::/32: server and client)
    and ISATAP (an interface identifier ::5efe:a.b.c.d)."""
    return _wrapped_ipv4(ip) or _isatap_ipv4(ip)


def _wrapped_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses of the forms that stand for them (what is connected to is IPv4)."""
    if any(ip in network for network in _WRAPPERS_96):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    return ip.teredo or ()


def _isatap_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 address in an ISATAP interface identifier (the tunnel's end on its site)."""
    if (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def _is_public_v6(ip: ipaddress.IPv6Address) -> bool:
    return ip in GLOBAL_UNICAST_V6 and not any(ip in network for network in NOT_PUBLIC_V6)


@dataclass(frozen=True)
class DataUrl:
    """A `data:image/...;base64,...` task value, decoded."""

    media_type: str
    body: bytes

    @property
    def suffix(self) -> str:
        suffix = mimetypes.guess_extension(self.media_type) or ""
        return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


def parse_data_url(value: str, field: str, max_bytes: int) -> DataUrl:
    """Decode a base64 image data: URL; refuse other data: URLs and bodies over `max_bytes`
    (checked on the encoded length, before decoding)."""
    header, comma, payload = value.partition(",")
    params = [part.strip().lower() for part in header[len("data:") :].split(";")]
    media_type = params[0]
    if not comma or params[-1] != "base64" or not media_type.startswith("image/"):
        raise RequestError(
            field, f"{describe(value)}: only base64 images are accepted as data: URLs (data:image/<type>;base64,...)"
        )
    if "%" in payload:
        payload = unquote(payload)
    payload = re.sub(r"\s+", "", payload).replace("-", "+").replace("_", "/")
    size = len(payload) // 4 * 3 - len(payload) + len(payload.rstrip("="))
    if size > max_bytes:
        raise RequestError(field, f"the data: URL holds {size} bytes, more than MAX_IMAGE_BYTES={max_bytes}", 413)
    try:
        body = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(field, f"{describe(value)}: the data: URL is not valid base64") from None
    if not body:
        raise RequestError(field, "the data: URL is empty")
    return DataUrl(media_type, body)


def _host_port(url: Url) -> tuple[str, int]:
    return url.host.strip("[]"), url.port or DEFAULT_PORTS[url.scheme]


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
