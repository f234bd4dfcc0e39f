"""One TLS client context for every outgoing connection of the process.

Building a context loads the whole CA bundle (about 0.8 MB of memory and a few ms of CPU);
httpx would build one per client, trio-websocket one per gateway connection.  Built once, on
first use, the way httpx builds its default (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """The shared context: certificate and host name checks on, as httpx's default."""
    return httpx.create_ssl_context()
