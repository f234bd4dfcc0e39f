"""Sans-IO pieces of the Discord gateway v10 protocol: envelopes, opcodes, close codes, zlib-stream.

Nothing here performs I/O or reads a clock; connection.py and runner.py drive it.
"""

from __future__ import annotations

import enum
import json
import zlib
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

API_VERSION = 10
MAX_PAYLOAD_BYTES = 4096  # a larger payload closes the connection with 4002
ZLIB_SUFFIX = b"\x00\x00\xff\xff"
LIBRARY_NAME = "diswoot"

Payload = dict[str, Any]


class Op(enum.IntEnum):
    """Gateway opcodes used by a DM bridge."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    RESUME = 6
    RECONNECT = 7
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


class NextAction(enum.Enum):
    """What the reconnect loop does after a connection ends."""

    RESUME = "resume"
    IDENTIFY = "identify"
    FATAL = "fatal"


class PayloadTooLarge(ValueError):
    """An outgoing payload would exceed Discord's 4096-byte limit."""


class ProtocolError(Exception):
    """The server sent something that is not a valid gateway payload."""


FATAL_CLOSE_MESSAGES: dict[int, str] = {
    4004: "the token was rejected: reset it in the Developer Portal and update DISCORD_TOKEN",
    4010: "Discord rejected the shard sent in IDENTIFY (invalid shard); diswoot runs one shard, "
    "so report this as a bug",
    4011: "sharding is required: the bot is in too many guilds for a single connection; remove "
    "it from guilds it does not need (diswoot does not shard)",
    4012: "Discord rejected gateway API version 10 (invalid API version); upgrade diswoot",
    4013: "the intents value is invalid (unknown bits): fix the intents bitfield "
    "(DIRECT_MESSAGES | DIRECT_MESSAGE_TYPING = 20480 is what diswoot needs)",
    4014: "a privileged intent is not enabled for this bot (disallowed intents): enable the "
    "intent under Bot -> Privileged Gateway Intents in the Developer Portal, or remove it from "
    "the intents",
}
IDENTIFY_CLOSE_CODES = frozenset({4003, 4005, 4007, 4009})


def close_action(code: int | None) -> NextAction:
    """Map a server close code (None for a TCP drop) to the next step.

    Codes below 4000, 4000-4002, 4008 and unknown codes resume; 4003/4005/4007/4009 start a new
    session; 4004 and 4010-4014 are fatal.
    """
    if code is None or code < 4000:
        return NextAction.RESUME
    if code in FATAL_CLOSE_MESSAGES:
        return NextAction.FATAL
    if code in IDENTIFY_CLOSE_CODES:
        return NextAction.IDENTIFY
    return NextAction.RESUME


def connect_url(base: str, *, compress: bool) -> str:
    """`base` with the v10 JSON query string (and zlib-stream transport compression)."""
    params = {"v": str(API_VERSION), "encoding": "json"}
    if compress:
        params["compress"] = "zlib-stream"
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(params), ""))


def encode(op: Op, d: Any) -> str:
    """Serialize an outgoing payload; raises PayloadTooLarge past 4096 bytes."""
    text = json.dumps({"op": int(op), "d": d}, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"op {int(op)} payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    return text


def decode(text: str | bytes) -> Payload:
    """Parse one incoming payload and check its envelope."""
    try:
        payload = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"undecodable gateway payload: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("op"), int):
        raise ProtocolError("gateway payload without an integer op")
    return payload


def identify_payload(
    token: str, intents: int, presence: Payload | None, os_name: str = "linux"
) -> Payload:
    """The `d` of an IDENTIFY (no `compress`: transport compression is used instead)."""
    d: Payload = {
        "token": token,
        "intents": intents,
        "properties": {"os": os_name, "browser": LIBRARY_NAME, "device": LIBRARY_NAME},
    }
    if presence is not None:
        d["presence"] = presence
    return d


def resume_payload(token: str, session_id: str, seq: int) -> Payload:
    """The `d` of a RESUME (the key is `seq`, not `s`)."""
    return {"token": token, "session_id": session_id, "seq": seq}


class ZlibStreamInflater:
    """One zlib-stream inflate context for one connection.

    Frames are buffered until the buffer ends with the Z_SYNC_FLUSH suffix; then the buffer is
    inflated into one JSON payload.
    """

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()

    def feed(self, frame: bytes) -> str | None:
        """Add a binary frame; return the decoded payload text once a message is complete."""
        self._buffer += frame
        if len(self._buffer) < len(ZLIB_SUFFIX) or not self._buffer.endswith(ZLIB_SUFFIX):
            return None
        try:
            return self._inflater.decompress(bytes(self._buffer)).decode()
        except (zlib.error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"corrupt zlib-stream: {exc}") from exc
        finally:
            self._buffer.clear()


class ZlibStreamDeflater:
    """Server side of zlib-stream (used by the fake gateway): one context per connection."""

    def __init__(self) -> None:
        self._deflater = zlib.compressobj()

    def compress(self, text: str) -> bytes:
        """Compress one payload and end it with a Z_SYNC_FLUSH."""
        return self._deflater.compress(text.encode()) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
