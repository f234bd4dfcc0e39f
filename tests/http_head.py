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
