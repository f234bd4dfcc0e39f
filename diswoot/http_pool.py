"""The daemon's long-lived HTTP clients: one small keep-alive pool per upstream.

Connection checks, writes, pool bookkeeping and :func:`send` cost less CPU than httpcore's and
httpx's.  A recently used connection counts as open without asking the kernel; a server that
closes idle connections after 5 s or more never meets a stale answer: httpx drops them first.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpcore
import httpx
from httpcore import AsyncConnectionInterface

from diswoot.tls import client_context

log = logging.getLogger("diswoot.http")
_httpx_log = logging.getLogger("httpx")

DISCORD_CONNECTIONS = 16
"""Discord allows 50 requests/s: 16 connections carry that at up to 300 ms per request."""
CHATWOOT_CONNECTIONS = 16
"""As many as the inbound lanes that run at once (``inbound.CONCURRENCY``)."""
RECENT = 2.0
"""Seconds after its last read during which a connection is not polled for a server close."""
RECHECK = 0.25
"""Seconds during which a poll's "still open" answer stands for the next scans."""
_TRANSPORT_FOR_URL = "_transport_for_url"
"""httpx 0.28's ``AsyncClient`` method that picks a URL's transport (proxy mounts)."""


def http_client(connections: int) -> httpx.AsyncClient:
    """A long-lived HTTP client for one upstream (connection pooling, sane timeouts).

    Each upstream gets its own small pool: httpcore scans every pooled connection (for idle
    ones, quadratically) on each request and response, so a pool of 200 shared by both
    upstreams cost more CPU than the requests themselves.  Proxies from the environment
    (``HTTPS_PROXY`` …) still apply: they are mounts of their own, left as httpx builds them.
    """
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(15.0, connect=5.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
        verify=client_context(),
    )
    pool = getattr(client._transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if type(pool) is httpcore.AsyncConnectionPool and isinstance(
        backend, httpcore.AsyncNetworkBackend
    ):
        pool.__class__ = LinearPool  # the same object and state, linear bookkeeping
        pool._network_backend = RecentlyUsedBackend(backend)
    else:  # another httpx/httpcore layout: keep its own checks (correct, only slower)
        log.debug("httpx pool layout not recognised; connections are polled as httpcore does")
    return client


def upstream_headers(client: httpx.AsyncClient, headers: Mapping[str, str]) -> httpx.Headers:
    """The client's default headers (``User-Agent``, ``Accept-Encoding`` …) with ``headers``
    over them: what ``client.request(..., headers=headers)`` sends, merged once for
    :func:`send` instead of on every request."""
    merged = client.headers.copy()
    merged.update(headers)
    return merged


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: httpx.Headers,
    timeout: httpx.Timeout,
    **body: Any,
) -> httpx.Response:
    """``client.request(method, url, headers=headers, timeout=timeout, **body)``, read in full,
    without the layers of ``AsyncClient.send`` that do nothing here: cookies (neither API uses
    them), auth (the credentials are in ``headers``), redirects (``follow_redirects`` is off),
    event hooks (none), base URL and default-header merging (``url`` is absolute, ``headers``
    comes from :func:`upstream_headers`).  httpx's log line of each request is kept.
    ``body``: httpx's ``params``, ``json``, ``content``, ``data`` or ``files``.

    The request goes to the transport the client picked for the URL, so proxies from the
    environment still apply; an httpx without that method takes its own ``send`` (same request).
    """
    if client.is_closed:
        raise RuntimeError("the HTTP client is closed")
    request = httpx.Request(
        method, url, headers=headers, extensions={"timeout": timeout.as_dict()}, **body
    )
    transport_for = getattr(client, _TRANSPORT_FOR_URL, None)
    if transport_for is None:
        return await client.send(request)
    transport: httpx.AsyncBaseTransport = transport_for(request.url)
    try:
        response = await transport.handle_async_request(request)
    except httpx.RequestError as exc:
        exc.request = request  # as httpx's own send does
        raise
    response.request = request
    if _httpx_log.isEnabledFor(logging.INFO):  # httpx's own line, e.g. at LOG_LEVEL=debug
        _httpx_log.info(
            'HTTP Request: %s %s "%s %d %s"', method, request.url, response.http_version,
            response.status_code, response.reason_phrase,
        )
    try:
        await response.aread()
    except BaseException:
        await response.aclose()
        raise
    return response


def _announces_body(data: bytes) -> bool:
    """Is ``data`` an HTTP/1.1 request head (all of it) after which a body follows?

    A wrong yes only delays ``data`` to the next write, which httpcore always makes (the end of
    the request, empty for a body of known length)."""
    if not data.endswith(b"\r\n\r\n"):
        return False
    head = data.lower()
    if b"\r\ntransfer-encoding:" in head:
        return True
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        return False
    end = head.index(b"\r\n", start + 2)
    return head[start + 17 : end].strip() not in (b"", b"0")


class LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool with its bookkeeping in linear time.

    On every request and every response httpcore 1.0 decides which connections to drop and
    which to hand to queued requests; for each idle connection it builds a list of all of them
    to take its length (encode/httpcore#1035, open): with 16 connections, 256 calls each time.
    This is the same policy in one pass; a property test holds it to httpcore's own.
    """

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        connections, closing = self._connections, []
        for connection in list(connections):
            if connection.is_closed():
                connections.remove(connection)
            elif connection.has_expired() or (
                connection.is_idle() and len(connections) > self._max_keepalive_connections
            ):
                connections.remove(connection)
                closing.append(connection)
        for queued in [request for request in self._requests if request.is_queued()]:
            origin = queued.request.url.origin
            reuse = (c for c in connections if c.can_handle_request(origin) and c.is_available())
            found: AsyncConnectionInterface | None = next(reuse, None)
            if found is not None:
                connection = found
            else:
                if len(connections) >= self._max_connections:
                    idle = next((c for c in connections if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection frees
                    connections.remove(idle)
                    closing.append(idle)
                connection = self.create_connection(origin)
                connections.append(connection)
            queued.assign_to_connection(connection)
        return closing


class RecentlyUsedBackend(httpcore.AsyncNetworkBackend):
    """``backend`` whose streams skip the readability poll right after a response."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return RecentlyUsedStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return RecentlyUsedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class RecentlyUsedStream(httpcore.AsyncNetworkStream):
    """A network stream that remembers when it was last known open (see docs/modules.md)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._open_until = 0.0  # monotonic time until which it counts as open without a poll
        self._head = b""  # a request head held back to go out with the body's first bytes

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._stream.read(max_bytes, timeout=timeout)
        self._open_until = time.monotonic() + RECENT
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """httpcore writes a request's head and its body separately: a head that announces a
        body waits for the body's first bytes, so they share one send (one system call, one
        segment for the server to read)."""
        if self._head:
            buffer, self._head = self._head + buffer, b""
        elif _announces_body(buffer):
            self._head = bytes(buffer)
            return
        await self._stream.write(buffer, timeout=timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return RecentlyUsedStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info != "is_readable":
            return self._stream.get_extra_info(info)
        now = time.monotonic()
        if now < self._open_until:
            return False
        readable = self._stream.get_extra_info(info)
        if not readable:
            self._open_until = now + RECHECK
        return readable
