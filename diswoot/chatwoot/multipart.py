"""Chatwoot's multipart message body: text fields as Rails reads them, files streamed.

A message with attachments is POSTed as ``multipart/form-data`` (``attachments[]`` parts, one
per file).  A file given as an async byte stream is passed through chunk by chunk, so a large
upload is never held in memory; when every part is bytes the body is built in one piece.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from diswoot.chatwoot.models import Attachment


def form_value(value: Any) -> str:
    """A multipart text field as Rails reads it (JSON for objects, true/false for bools)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def quote_param(name: str) -> str:
    """A Content-Disposition parameter value, escaped like browsers do."""
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def multipart_body(
    fields: Mapping[str, str], attachments: Sequence[Attachment]
) -> tuple[str, AsyncIterator[bytes] | bytes]:
    """A multipart/form-data body; streamed when any attachment is an async byte stream."""
    boundary = secrets.token_hex(16)
    head = bytearray()
    for name, value in fields.items():
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        head += value.encode() + b"\r\n"
    parts: list[tuple[bytes, bytes | AsyncIterator[bytes]]] = []
    for attachment in attachments:
        part_head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachments[]"; '
            f'filename="{quote_param(attachment.filename)}"\r\n'
            f"Content-Type: {attachment.content_type}\r\n\r\n"
        ).encode()
        data = attachment.data
        parts.append((part_head, data if isinstance(data, bytes) else aiter(data)))
    tail = f"--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    if all(isinstance(data, bytes) for _, data in parts):
        body = bytes(head) + b"".join(h + d + b"\r\n" for h, d in parts if isinstance(d, bytes))
        return content_type, body + tail

    async def stream() -> AsyncIterator[bytes]:
        yield bytes(head)
        for part_head, data in parts:
            yield part_head
            if isinstance(data, bytes):
                yield data
            else:
                async for chunk in data:
                    yield chunk
            yield b"\r\n"
        yield tail

    return content_type, stream()
