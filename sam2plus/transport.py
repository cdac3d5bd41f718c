"""The HTTP client of every fetch: urllib3 pools that request one `urls.Target` at a time.

No redirect is followed here and no environment is read (proxies, .netrc, cookies): the caller
asks `urls.UrlPolicy` about each hop. A Target with `public_only` goes through pools whose
connections resolve the host once, refuse it when any of its addresses is loopback, private,
link-local or otherwise not public, and connect to exactly the addresses checked, so a name
that resolves (or re-resolves) to 127.0.0.1 is caught on the address actually connected to.

A request made with a `watchdog.Watch` (one download's deadline) hands the watch its socket
before waiting for the answer, so the watchdog can cut a host that drips its headers or body,
and its connect and read timeouts are what is left of the deadline; names are resolved on a
resolver thread and waited for within the deadline too. Only the identity content coding is
asked for, and a body is never decoded here (`decode_content=False`): the fetcher refuses a
response sent with any other coding before reading it.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import os
import socket

import certifi
from urllib3 import HTTPConnectionPool, HTTPResponse, HTTPSConnectionPool, PoolManager, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family, create_connection

from .urls import Target, is_public_address
from .watchdog import Watch

__all__ = ["HttpClient", "PrivateAddressError"]

_WATCH: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("sam2plus_watch", default=None)
RESOLVER_THREADS = 8  # name lookups at once per process; a lookup held past its deadline keeps its thread
_resolvers: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


class PrivateAddressError(Exception):
    """A host outside LABEL_STUDIO_URL and IMAGE_HOSTS resolved to a non-public address."""

    def __init__(self, host: str, address: str):
        super().__init__(f"{host} resolves to {address}")
        self.host = host
        self.address = address


def _resolve(conn: HTTPConnection) -> list[str]:
    """The addresses of the connection's host, resolved on a resolver thread and waited for no
    longer than what is left of the current request's deadline (the system resolver has its own
    timeouts, which no caller can shorten); a name not resolved in time is NameResolutionError."""
    host = conn._dns_host.strip("[]")
    watch = _WATCH.get()
    future = _resolver().submit(socket.getaddrinfo, host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    timeout = conn.timeout if isinstance(conn.timeout, (int, float)) else None
    try:
        records = future.result(timeout=watch.remaining() if watch is not None else timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise NameResolutionError(conn.host, conn, socket.gaierror("timed out")) from None
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    return list(dict.fromkeys(record[4][0] for record in records))


def _resolver() -> concurrent.futures.ThreadPoolExecutor:
    """This process's resolver threads (a forked worker makes its own: its parent's are not there)."""
    pid = os.getpid()
    if pid not in _resolvers:
        _resolvers[pid] = concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="sam2plus-resolve")
    return _resolvers[pid]


def _connect_named(conn: HTTPConnection) -> socket.socket:
    """urllib3's HTTPConnection._new_conn, its name resolved within the deadline (`_resolve`)."""
    return _connect_to(conn, _resolve(conn))


def _connect_public(conn: HTTPConnection) -> socket.socket:
    """urllib3's HTTPConnection._new_conn, connecting only to checked public addresses."""
    addresses = _resolve(conn)
    for address in addresses:  # a name with several records is refused if any is not public
        if not is_public_address(address):
            raise PrivateAddressError(conn.host, address)
    return _connect_to(conn, addresses)


def _connect_to(conn: HTTPConnection, addresses: list[str]) -> socket.socket:
    """A socket connected to the first of `addresses` that answers."""
    error: OSError | None = None
    for address in addresses:
        try:
            return create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from exc
        except OSError as exc:
            error = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class _Watched:
    """A connection that hands its socket to the current request's Watch before the answer is read."""

    def getresponse(self, *args, **kwargs):
        watch = _WATCH.get()
        if watch is not None and self.sock is not None:
            watch.arm(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_named(self)


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_named(self)


class _PublicHTTPConnection(_Watched, HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_public(self)


class _PublicHTTPSConnection(_Watched, HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_public(self)


class _NamedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _NamedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class HttpClient:
    """GET and POST of single Targets; thread-safe (urllib3 pools), shared by a process's threads."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = Timeout(connect=timeout, read=timeout)
        self._named = PoolManager(num_pools=8, maxsize=8, ca_certs=certifi.where())
        self._named.pool_classes_by_scheme = {"http": _NamedHTTPPool, "https": _NamedHTTPSPool}
        self._public = PoolManager(num_pools=16, maxsize=8, ca_certs=certifi.where())
        self._public.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}

    def request(
        self,
        method: str,
        target: Target,
        headers: dict[str, str],
        body: bytes | None = None,
        watch: Watch | None = None,
    ) -> HTTPResponse:
        """One request, streamed (read it with `.stream()`, then `.release_conn()`); urllib3 and
        PrivateAddressError exceptions propagate. With a `watch` (watched by the watchdog), the
        connection's socket is armed on it and the timeouts are what is left of its deadline."""
        pools = self._public if target.public_only else self._named
        timeout = self.timeout
        if watch is not None:
            left = max(watch.remaining(), 0.001)
            timeout = Timeout(connect=left, read=left)
        armed = _WATCH.set(watch)
        try:
            return pools.urlopen(
                method,
                target.url,
                body=body,
                headers={"Accept-Encoding": "identity", **headers},
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
                timeout=timeout,
            )
        finally:
            _WATCH.reset(armed)
