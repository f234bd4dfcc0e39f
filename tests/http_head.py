"""Reading an HTTP/1.1 head off a raw socket, for the tests' small servers and clients."""

from __future__ import annotations

import trio


async def read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The bytes received up to the blank line that ends a request's or response's head (and
    any that came with it); None when the peer closed before it ended."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    return data


def content_length(head: bytes) -> int:
    """The head's ``Content-Length`` (0 without one)."""
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


async def read_body(
    stream: trio.abc.ReceiveStream, head: bytes, received: bytes
) -> tuple[bytes, bytes]:
    """The body ``head`` announces, ``received`` (the bytes after the head) completed from
    ``stream``; and the bytes after that body (a kept-alive peer's next request)."""
    length = content_length(head)
    while len(received) < length:
        received += await stream.receive_some(65536)
    return received[:length], received[length:]
