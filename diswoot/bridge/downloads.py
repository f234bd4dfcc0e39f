"""Bounded downloads of attachments (Discord CDN, Chatwoot ``data_url``) from allowed hosts only.

Every download names an :class:`OriginPolicy`; the URL and each redirect (followed by hand, to
http(s) only, at most :data:`MAX_REDIRECTS`) must be on it, or nothing is requested
(:class:`NotAllowed`).  Bodies are capped while they stream (:class:`TooLarge`: send a link);
:class:`DownloadUnavailable` is transient (network, 5xx, 408, 429), :class:`DownloadFailed`
permanent for the URL (other 4xx, e.g. an expired signed CDN URL; not allowed; bad URL).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import httpx

from diswoot.config import Config
from diswoot.errors import UpstreamError

TRANSIENT_STATUSES = frozenset({408, 425, 429})
ABANDON_READS = 16  # reads after closing an abandoned body (the first one normally fails)
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DISCORD_CDN_ORIGINS = ("https://cdn.discordapp.com", "https://media.discordapp.net")
DEFAULT_PORTS = {"http": 80, "https": 443}


class DownloadError(UpstreamError):
    """Base class of the download failures."""


class TooLarge(DownloadError):
    """The file exceeds the cap (announced by ``Content-Length`` or found while streaming)."""

    def __init__(self, url: str, limit: int, size: int | None) -> None:
        self.url, self.limit, self.size = url, limit, size
        what = f"{size} bytes" if size is not None else "more"
        super().__init__(f"{_safe(url)} is larger than {limit} bytes ({what})")


class DownloadUnavailable(DownloadError):
    """Transient: the network failed or the server answered 5xx/408/429; try again later."""

    transient = True


class DownloadFailed(DownloadError):
    """Permanent for this URL: a 4xx (an expired signed URL answers 403/404), bad URL, ..."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotAllowed(DownloadFailed):
    """The URL or a redirect target is not on the policy's hosts: it was not requested."""


@dataclass(frozen=True)
class OriginPolicy:
    """The places downloads may go: whole origins, and hosts reachable over http(s).

    ``origins`` are ``(scheme, host, port)``; ``hosts`` are ``(host, port)`` with ``None`` for
    the scheme's default port.  Host names are compared lower-case without a trailing dot, as
    httpx (the client that connects) parses them.
    """

    origins: frozenset[tuple[str, str, int]]
    hosts: frozenset[tuple[str, int | None]]
    where: str
    """How operators allow more, for messages (e.g. "CHATWOOT_MEDIA_HOSTS")."""

    @classmethod
    def build(cls, *, origins: Iterable[str], hosts: Iterable[str], where: str) -> OriginPolicy:
        """From origin URLs (``https://chat.example.com``) and ``host[:port]`` entries."""
        parsed_origins = {_origin(httpx.URL(url)) for url in origins}
        parsed_hosts: set[tuple[str, int | None]] = set()
        for entry in hosts:
            url = httpx.URL(f"http://{entry}")
            parsed_hosts.add((_host(url), url.port))
        return cls(frozenset(parsed_origins), frozenset(parsed_hosts), where)

    def allows(self, url: httpx.URL) -> bool:
        if url.scheme not in DEFAULT_PORTS or not url.host:
            return False
        scheme, host, port = _origin(url)
        if (scheme, host, port) in self.origins or (host, port) in self.hosts:
            return True
        return port == DEFAULT_PORTS[scheme] and (host, None) in self.hosts

    def check(self, url: httpx.URL) -> None:
        """:class:`NotAllowed` unless :meth:`allows`; the message names only the origin."""
        if not self.allows(url):
            shown = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"[:120]
            raise NotAllowed(f"{shown} is not an allowed download origin (see {self.where})")


def chatwoot_media_policy(cfg: Config) -> OriginPolicy:
    """Attachments of agent replies: CHATWOOT_BASE_URL's origin and CHATWOOT_MEDIA_HOSTS."""
    return OriginPolicy.build(
        origins=[cfg.chatwoot_base_url],
        hosts=cfg.chatwoot_media_hosts,
        where="CHATWOOT_BASE_URL and CHATWOOT_MEDIA_HOSTS",
    )


def discord_cdn_policy(cfg: Config) -> OriginPolicy:
    """Files of DMs: Discord's CDN hosts and the origin of DISCORD_API_BASE_URL."""
    return OriginPolicy.build(
        origins=[*DISCORD_CDN_ORIGINS, cfg.discord_api_base_url],
        hosts=(),
        where="Discord's CDN hosts and DISCORD_API_BASE_URL",
    )


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii", "replace").lower().rstrip(".")


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    scheme = url.scheme.lower()
    return scheme, _host(url), url.port or DEFAULT_PORTS.get(scheme, 0)


@dataclass(frozen=True)
class Downloaded:
    """A downloaded file: its bytes, media type and name (when the server or URL gives one)."""

    data: bytes
    content_type: str | None
    filename: str | None


class DownloadStream:
    """An open download: its headers are checked; :meth:`chunks` streams the body once."""

    def __init__(self, response: httpx.Response, url: str, max_bytes: int) -> None:
        self._response = response
        self.url = url
        self.max_bytes = max_bytes
        self.length = _content_length(response)
        self.content_type = _media_type(response.headers.get("content-type"))
        self.filename = _filename(response.headers.get("content-disposition"), url)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body, chunk by chunk; :class:`TooLarge` before the cap would be exceeded.

        Iterate it to the end or close it (``contextlib.aclosing``).
        """
        body = self._response.aiter_bytes()
        finished = False
        read = 0
        try:
            async for chunk in body:
                read += len(chunk)
                if read > self.max_bytes:
                    raise TooLarge(self.url, self.max_bytes, self.length)
                yield chunk
            finished = True
        except httpx.TransportError as exc:
            finished = True  # raised out of httpx's generators, so each of them has ended
            raise DownloadUnavailable(
                f"download of {_safe(self.url)} broke off: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if not finished:
                await _abandon(self._response, body)


@asynccontextmanager
async def open_download(
    http: httpx.AsyncClient, url: str, *, max_bytes: int, policy: OriginPolicy
) -> AsyncIterator[DownloadStream]:
    """GET ``url`` and check status and announced size; the body is read by the caller.

    For passing a file straight on (e.g. as a multipart part) without holding it in memory.
    """
    async with AsyncExitStack() as stack:
        response = await _get(http, url, policy)
        stack.push_async_callback(response.aclose)
        _check_status(url, response)
        stream = DownloadStream(response, url, max_bytes)
        if stream.length is not None and stream.length > max_bytes:
            raise TooLarge(url, max_bytes, stream.length)
        yield stream


async def download(
    http: httpx.AsyncClient, url: str, *, max_bytes: int, policy: OriginPolicy
) -> Downloaded:
    """GET ``url`` into memory, at most ``max_bytes`` of it (else :class:`TooLarge`)."""
    async with open_download(http, url, max_bytes=max_bytes, policy=policy) as stream:
        buffer = io.BytesIO()
        async with aclosing(stream.chunks()) as chunks:
            async for chunk in chunks:
                buffer.write(chunk)
        return Downloaded(
            data=buffer.getvalue(),  # shares the buffer, no copy (CPython)
            content_type=stream.content_type,
            filename=stream.filename,
        )


async def _get(http: httpx.AsyncClient, url: str, policy: OriginPolicy) -> httpx.Response:
    """The first response that is not a redirect; every URL on the way is checked first."""
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DownloadFailed(f"cannot download {_safe(url)}: {exc}") from exc
    for _ in range(MAX_REDIRECTS + 1):
        policy.check(target)
        try:
            response = await http.send(
                http.build_request("GET", target), stream=True, follow_redirects=False
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DownloadFailed(f"cannot download {_safe(url)}: {exc}") from exc
        except httpx.TransportError as exc:
            raise DownloadUnavailable(
                f"download of {_safe(url)} failed: {type(exc).__name__}: {exc}"
            ) from exc
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_STATUSES or location is None:
            return response
        await response.aclose()
        try:
            target = target.join(location)
        except (httpx.InvalidURL, ValueError) as exc:
            raise DownloadFailed(f"download of {_safe(url)} redirects to a bad URL") from exc
    raise DownloadFailed(f"download of {_safe(url)} redirects more than {MAX_REDIRECTS} times")


async def _abandon(response: httpx.Response, body: AsyncIterator[bytes]) -> None:
    """Stop reading a body half-way without leaving httpx's generators suspended.

    httpx reads a body through nested async generators (``aiter_bytes`` -> ``aiter_raw`` ->
    transport -> httpcore); abandoning the outer one leaves the inner ones suspended, and trio
    warns about each when it is garbage collected.  Once the response is closed, the next read
    fails in the innermost generator, and that error ends every one of them.
    """
    await response.aclose()
    with contextlib.suppress(Exception):  # the expected read error, or the end of the body
        for _ in range(ABANDON_READS):
            await anext(body)


def _check_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"download of {_safe(url)} answered HTTP {status}"
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise DownloadUnavailable(message)
    raise DownloadFailed(message, status)


def _content_length(response: httpx.Response) -> int | None:
    if "content-encoding" in response.headers:
        return None  # the header counts the compressed bytes
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _media_type(value: str | None) -> str | None:
    """``image/png`` from ``image/png; charset=...`` (None when absent)."""
    if not value:
        return None
    media = value.split(";", 1)[0].strip().lower()
    return media or None


def filename_from_url(url: str) -> str | None:
    """The last path segment of ``url``, percent-decoded (None for a bare host)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name or None


def _filename(disposition: str | None, url: str) -> str | None:
    """The name from ``Content-Disposition`` (``filename*`` preferred), else from the URL."""
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename()
        if name:
            return PurePosixPath(name.replace("\\", "/")).name or None
    return filename_from_url(url)


def _safe(url: str) -> str:
    """The URL without its query (signed URLs carry credentials there) for messages/logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
