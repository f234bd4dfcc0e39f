"""Parsers of single configuration values, with the limits Discord and Chatwoot enforce.

Each parser takes the raw text of one variable and returns the typed value or raises
``ValueError`` saying what is expected; :func:`diswoot.config.load_config` maps variables to
parsers. The limits are checked at start, so a value that Discord would refuse (or that would
make the presence task raise) stops the daemon with exit 78 instead of failing later.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from urllib.parse import urlsplit

# -- Discord's limits on what the configuration feeds ---------------------------------------
# Embeds: discord-api.md §5.4 "Embed limits"; the OpenAPI spec's RichEmbed (title 256,
# description 4096) and RichEmbedFooter (text 2048, icon_url ≤2048 characters, a URI).
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FOOTER_MAX = 2048
URL_MAX = 2048
# Components: discord-api.md §3.3; spec ButtonComponentForMessageRequest (label ≤80),
# TextInputComponentForModalRequest (placeholder ≤100), ModalInteractionCallbackRequestData and
# LabelComponentForModalRequest (title / label ≤45).
BUTTON_LABEL_MAX = 80
PLACEHOLDER_MAX = 100
MODAL_TITLE_MAX = 45
MODAL_LABEL_MAX = 45
# The custom status (activity type 4, ``state``): neither the shared docs nor the OpenAPI spec
# (REST only) give a length. Discord's clients cap a custom status at 128 characters, and
# discord-api-types documents activity ``state`` as "max 128 characters" (searched 2026-12).
# 128 code points are at most 512 UTF-8 bytes, the limit gateway.events.Presence enforces.
PRESENCE_TEXT_MAX = 128
# BRAND_NAME becomes the modal title "Rate {BRAND_NAME}" (45 characters with the 5 of "Rate ").
BRAND_NAME_MAX = MODAL_TITLE_MAX - len("Rate ")
# Custom emoji: names of 2-32 characters of [A-Za-z0-9_] (Discord "Emoji" resource); the
# reaction route wants ``name:id`` (discord-api.md §5.6).
_CUSTOM_EMOJI = re.compile(
    r"<a?:([A-Za-z0-9_]{2,32}):([0-9]{15,21})>|(?:a?:)?([A-Za-z0-9_]{2,32}):([0-9]{15,21})"
)
# Uploads: a bot's files are capped at 10 MiB each (discord-api.md §5.5, HTTP 413 / 40005
# above); DMs have no guild boost that could raise it.
DISCORD_UPLOAD_MAX_MB = 10
# Chatwoot's default MAXIMUM_FILE_UPLOAD_SIZE is 40 MB (dashboard and widget); API inboxes do
# not enforce it (chatwoot-api.md, `Attachment#should_validate_file?`), so it only warns.
CHATWOOT_DEFAULT_UPLOAD_MB = 40

_HEX = re.compile(r"#?([0-9a-fA-F]{6})")
_APPLICATION_ID = re.compile(r"[0-9]{1,20}")  # a snowflake: a 64-bit unsigned integer
_HOST = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A value that starts with "#" or holds a " # ": most likely a comment pasted after KEY=.
_COMMENT_LIKE = re.compile(r"^\s*#|\s#(\s|$)")


def parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_outside_hours(raw: str) -> bool:
    """OUTSIDE_HOURS_BEHAVIOR: true (accept and notify) or false (deny); the original's
    README also calls them "allow" and "deny"."""
    low = raw.strip().lower()
    if low in ("allow", "deny"):
        return low == "allow"
    try:
        return parse_bool(low)
    except ValueError:
        raise ValueError("expected true (allow) or false (deny)") from None


def hours_parser(maximum: float) -> Callable[[str], float]:
    """A number of hours from 0 to ``maximum``, fractions allowed (``0.5``)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number of hours from 0 to {maximum:g}") from None
        if not 0 <= value <= maximum:  # also NaN
            raise ValueError(f"expected a number of hours from 0 to {maximum:g}")
        return value

    return parse


def int_parser(
    minimum: int, maximum: int | None = None, *, zero_disables: bool = False
) -> Callable[[str], int]:
    """Whole numbers from ``minimum`` to ``maximum`` (and 0 when ``zero_disables``)."""
    if maximum is None:
        expected = f"a whole number of at least {minimum}"
    else:
        expected = f"a whole number from {minimum} to {maximum}"
    if zero_disables:
        expected = f"0 (disabled) or {expected}"

    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected {expected}") from None
        in_range = value >= minimum and (maximum is None or value <= maximum)
        if not (in_range or (zero_disables and value == 0)):
            raise ValueError(f"expected {expected}")
        return value

    return parse


def parse_colour(raw: str) -> int:
    """``7BB8F5`` or ``#7BB8F5``: six hex digits, so always within Discord's 0..0xFFFFFF."""
    m = _HEX.fullmatch(raw.strip())
    if not m:
        raise ValueError("expected a hex colour like 7BB8F5 or #7BB8F5")
    return int(m.group(1), 16)


def url_parser(required: bool) -> Callable[[str], str]:
    """An http(s) URL with a host and no spaces, at most :data:`URL_MAX` characters."""

    def parse(raw: str) -> str:
        value = raw.strip().rstrip("/")
        if not value and not required:
            return ""
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. a malformed [IPv6] host
            parts = urlsplit("")
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or any(c.isspace() for c in value)
        ):
            raise ValueError("expected an http:// or https:// URL")
        if len(value) > URL_MAX:
            raise ValueError(f"expected a URL of at most {URL_MAX} characters")
        return value

    return parse


def text_parser(limit: int, where: str, *, strip: bool = False) -> Callable[[str], str]:
    """Free text Discord shows in ``where``; counted after trimming, as Discord counts.

    With ``strip`` the trimmed text is kept, so nothing beyond the limit reaches Discord.
    """

    def parse(raw: str) -> str:
        length = len(raw.strip())
        if length > limit:
            raise ValueError(f"{where} takes at most {limit} characters, this has {length}")
        return raw.strip() if strip else raw

    return parse


def parse_application_id(raw: str) -> str:
    value = raw.strip()
    if not _APPLICATION_ID.fullmatch(value) or int(value) == 0 or int(value) >= 2**64:
        raise ValueError("expected a Discord application id (a number, as the portal shows it)")
    return value


def parse_public_key(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError("expected the application's 64-character hex public key")
    return value.lower()


def parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in _LOG_LEVELS:
        raise ValueError("expected one of " + ", ".join(_LOG_LEVELS))
    return value


def parse_token(raw: str) -> str:
    """The bot token; a pasted ``Bot `` prefix is tolerated."""
    value = raw.strip()
    if value.lower().startswith("bot "):
        value = value[4:].strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("expected the bot token (without spaces)")
    return value


def parse_secret(raw: str) -> str:
    """An API token or shared secret: one word (a space means something else was pasted)."""
    value = raw.strip()
    if any(c.isspace() for c in value):
        raise ValueError("expected a single token without spaces")
    return value


def parse_path_token(raw: str) -> str:
    """A secret URL path segment: no spaces and none of ``/ ? # %``."""
    value = parse_secret(raw)
    if any(c in "/?#%" for c in value):
        raise ValueError("expected a token usable as one URL path segment (no / ? # %)")
    return value


def parse_hosts(raw: str) -> tuple[str, ...]:
    """``files.example.com, cdn.example.com:8443`` -> lower-case ``host[:port]`` entries.

    An entry may also be written as an origin (``https://files.example.com``).
    """
    hosts: list[str] = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        netloc = urlsplit(entry).netloc if "://" in entry else entry
        if not _HOST.fullmatch(netloc):
            raise ValueError(f"expected comma-separated host names (got {entry[:60]!r})")
        hosts.append(netloc.lower())
    return tuple(hosts)


def parse_emoji(raw: str) -> str:
    """A reaction emoji as the reaction route wants it: the unicode emoji, or ``name:id``.

    Accepts a unicode emoji (one, possibly a ZWJ, keycap, flag or tag sequence) or a custom
    emoji as ``<:name:id>``, ``<a:name:id>`` or ``name:id``; blank disables the reaction.
    """
    value = raw.strip()
    if not value:
        return ""
    custom = _CUSTOM_EMOJI.fullmatch(value)
    if custom:
        name, emoji_id = (custom.group(1), custom.group(2)) if custom.group(1) else (
            custom.group(3), custom.group(4))
        return f"{name}:{emoji_id}"
    if is_unicode_emoji(value):
        return value
    hint = " (Discord's :shortcodes: do not work here)" if value.startswith(":") else ""
    raise ValueError(
        "expected one unicode emoji like ✅, or a custom emoji as <:name:id> or name:id" + hint
    )


_KEYCAP = re.compile("[0-9#*]\ufe0f?\u20e3")
_TAG_SEQUENCE = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
_FLAG = re.compile("[\U0001f1e6-\U0001f1ff]{2}")
_SKIN_TONES = re.compile("[\U0001f3fb-\U0001f3ff]")
# Emoji whose base character is punctuation or a letter in Unicode's categories.
_OTHER_EMOJI_BASES = frozenset("\u203c\u2049\u2139\u3030\u303d")


def is_unicode_emoji(text: str) -> bool:
    """Whether ``text`` is one emoji: a keycap, a flag, a tag sequence, or pictographs joined
    by ZWJ, each optionally followed by VS16 or a skin tone (UTS #51, without its data files)."""
    if _KEYCAP.fullmatch(text) or _FLAG.fullmatch(text) or _TAG_SEQUENCE.fullmatch(text):
        return True
    return all(_is_emoji_element(part) for part in text.split("\u200d"))


def _is_emoji_element(part: str) -> bool:
    if not part:
        return False
    base, rest = part[0], part[1:]
    pictograph = ord(base) > 0x7F and (
        unicodedata.category(base) in ("So", "Sm", "Sk") or base in _OTHER_EMOJI_BASES
    )
    return pictograph and (rest in ("", "\ufe0f") or _SKIN_TONES.fullmatch(rest) is not None)


def looks_like_comment(name: str, raw: str) -> bool:
    """A value that starts with ``#`` or holds `` # ``: a comment pasted after ``KEY=``.

    systemd keeps everything after ``=`` (``DISCORD_TOKEN=  # Bot token`` is the token
    ``# Bot token``). Colours written as ``#7BB8F5`` are not comments.
    """
    if name.startswith("COLOR_") and _HEX.fullmatch(raw.strip()):
        return False
    return _COMMENT_LIKE.search(raw) is not None


COMMENT_FIX = (
    "comments must be on their own lines: systemd (and diswoot) keep everything after = as the "
    "value"
)

__all__ = [
    "BRAND_NAME_MAX",
    "BUTTON_LABEL_MAX",
    "CHATWOOT_DEFAULT_UPLOAD_MB",
    "COMMENT_FIX",
    "DISCORD_UPLOAD_MAX_MB",
    "EMBED_DESCRIPTION_MAX",
    "EMBED_FOOTER_MAX",
    "EMBED_TITLE_MAX",
    "MODAL_LABEL_MAX",
    "MODAL_TITLE_MAX",
    "PLACEHOLDER_MAX",
    "PRESENCE_TEXT_MAX",
    "URL_MAX",
    "hours_parser",
    "int_parser",
    "is_unicode_emoji",
    "looks_like_comment",
    "parse_application_id",
    "parse_bool",
    "parse_colour",
    "parse_emoji",
    "parse_hosts",
    "parse_log_level",
    "parse_outside_hours",
    "parse_path_token",
    "parse_public_key",
    "parse_secret",
    "parse_token",
    "text_parser",
    "url_parser",
]
