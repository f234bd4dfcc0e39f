"""Split long text into Discord-sized messages (pure).

:func:`plan_chunks` loses nothing but the whitespace between chunks, keeps every chunk within
``limit`` characters (code points, as Discord counts), cuts at the most natural boundary that
fits, and closes a code fence at a chunk boundary and reopens it in the next chunk.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass

DISCORD_MESSAGE_LIMIT = 2000
FENCE_CLOSE = "\n```"
_FENCE_RUN = re.compile(r"`{3,}")
_LANG = re.compile(r"([A-Za-z0-9_+\-.#]+)\n")  # Discord's info string: a word, then newline
_WHITESPACE = re.compile(r"\s+")
_ZWJ = "\u200d"

# Split-point categories, best first.
_PARAGRAPH, _LINE, _LINE_IN_FENCE, _SPACE, _SPACE_IN_FENCE = range(5)


@dataclass(frozen=True)
class Chunk:
    """One outgoing message: ``prefix + text[start:end] + suffix``."""

    body: str
    start: int
    end: int
    prefix: str = ""
    suffix: str = ""

    @property
    def text(self) -> str:
        return self.prefix + self.body + self.suffix


def chunk_text(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> list[str]:
    """Pieces of ``text`` of at most ``limit`` characters; ``[]`` for blank input."""
    return [c.text for c in plan_chunks(text, limit)]


def plan_chunks(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> list[Chunk]:
    """Like :func:`chunk_text`, with each chunk's position in ``text`` (see module docs)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    fences = _Fences(text, limit)
    content_end = len(text.rstrip())
    chunks: list[Chunk] = []
    pos = _chunk_start(text, 0, limit)
    while pos < content_end:
        prefix = fences.reopen_at(pos) or ""
        budget = limit - len(prefix)
        if content_end - pos <= budget:
            chunks.append(Chunk(text[pos:content_end], pos, content_end, prefix))
            break
        end = _choose_cut(text, pos, budget, limit, fences)
        suffix = FENCE_CLOSE if fences.reopen_at(end) is not None else ""
        chunks.append(Chunk(text[pos:end], pos, end, prefix, suffix))
        pos = _chunk_start(text, end, limit)
    return chunks


# ------------------------------------------------------------------------------- fences
class _Fences:
    """Runs of 3+ backticks; each run toggles in/out of a code block (Discord-style)."""

    def __init__(self, text: str, limit: int) -> None:
        self._text = text
        self.runs = [(m.start(), m.end()) for m in _FENCE_RUN.finditer(text)]
        self._starts = [s for s, _ in self.runs]
        self._ends = [e for _, e in self.runs]
        # Blocks are only repaired when the reopening prefix and the closer take at most half
        # the limit; a long language tag is dropped first.
        self._reopen: list[str | None] = []
        for _, end in self.runs:
            m = _LANG.match(text, end)
            options = (f"```{m.group(1)}\n" if m else "```\n", "```\n")
            fitting = [p for p in options if len(p) + len(FENCE_CLOSE) <= limit // 2]
            self._reopen.append(fitting[0] if fitting else None)

    def _opener(self, pos: int) -> int | None:
        """Index of the run that opened the block containing ``pos``, if any."""
        count = bisect.bisect_right(self._ends, pos)
        return count - 1 if count % 2 else None

    def reopen_at(self, pos: int) -> str | None:
        """The prefix that reopens the block around ``pos``; None outside or if unrepairable."""
        opener = self._opener(pos)
        return None if opener is None else self._reopen[opener]

    def content_start(self, pos: int) -> int:
        """Where the code of the block around ``pos`` starts (after ```lang\\n)."""
        opener = self._opener(pos)
        assert opener is not None
        run_end = self.runs[opener][1]
        m = _LANG.match(self._text, run_end)
        return m.end() if m else run_end

    def inside_run(self, pos: int) -> bool:
        i = bisect.bisect_right(self._starts, pos) - 1
        return i >= 0 and self.runs[i][0] < pos < self.runs[i][1]

    def closer_at(self, pos: int) -> bool:
        i = bisect.bisect_left(self._starts, pos)
        return i < len(self.runs) and self.runs[i][0] == pos and i % 2 == 1


# ------------------------------------------------------------------------------- cutting
def _chunk_start(text: str, pos: int, limit: int) -> int:
    """Skip the separator at ``pos``, keeping the indentation of a new line if it is short."""
    m = _WHITESPACE.match(text, pos)
    if m is None:
        return pos
    first_content = m.end()
    newline = text.rfind("\n", pos, first_content)
    if newline != -1:
        indent_start = newline + 1
    elif pos == 0:  # the text's own first line
        indent_start = 0
    else:
        return first_content
    if first_content - indent_start > limit // 4 or first_content == len(text):
        return first_content
    return indent_start


def _choose_cut(text: str, pos: int, budget: int, limit: int, fences: _Fences) -> int:
    """End (exclusive) of the body of the chunk starting at ``pos``."""
    window_end = pos + budget
    first_content = pos
    while text[first_content].isspace():
        first_content += 1

    def fits(end: int) -> bool:
        fenced = fences.reopen_at(end) is not None
        return end - pos + (len(FENCE_CLOSE) if fenced else 0) <= budget

    def fenced_ok(end: int, next_start: int) -> bool:
        """A block is not cut right after its opener or right before its closer."""
        if fences.reopen_at(end) is None:
            return True
        code_start, last = fences.content_start(end), end - 1
        while last >= code_start and text[last].isspace():
            last -= 1
        return last >= code_start and not fences.closer_at(next_start)

    # Whitespace runs in the window: (body end, separator end, category set), best last.
    runs: list[tuple[int, int, tuple[int, ...]]] = []
    for m in _WHITESPACE.finditer(text, first_content):
        end = m.start()
        if end > window_end:
            break
        if not fits(end):
            continue
        fenced = fences.reopen_at(end) is not None
        newlines = m.group().count("\n")
        categories = [_SPACE_IN_FENCE if fenced else _SPACE]
        if newlines:
            categories.append(_LINE_IN_FENCE if fenced else _LINE)
        if newlines >= 2 and not fenced:
            categories.append(_PARAGRAPH)
        runs.append((end, m.end(), tuple(categories)))

    def usable(end: int, separator_end: int) -> bool:
        next_start = _chunk_start(text, end, limit)
        return (
            is_grapheme_boundary(text, end)
            and is_grapheme_boundary(text, next_start)
            and fenced_ok(end, separator_end)
        )

    for threshold in (pos + budget // 2, pos + 1):
        for category in range(5):
            for end, separator_end, kinds in reversed(runs):
                if end < threshold:
                    break
                if category in kinds and usable(end, separator_end):
                    return end

    for end in range(window_end, first_content, -1):
        if (
            fits(end)
            and is_grapheme_boundary(text, end)
            and not fences.inside_run(end)
            and fenced_ok(end, end)
        ):
            return _trim(text, pos, end)

    end = window_end if fits(window_end) else window_end - len(FENCE_CLOSE)
    if end - 1 > first_content and _is_high_surrogate(text[end - 1]):
        end -= 1
    return _trim(text, pos, max(end, first_content + 1))


def _trim(text: str, pos: int, end: int) -> int:
    return pos + len(text[pos:end].rstrip())


# ------------------------------------------------------------------------------- graphemes
def _is_high_surrogate(ch: str) -> bool:
    return 0xD800 <= ord(ch) <= 0xDBFF


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _is_hangul_leading(ch: str) -> bool:
    cp = ord(ch)
    return 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97F


def _attaches_to_previous(ch: str) -> bool:
    """Extend/SpacingMark-like characters, emoji modifiers, tags, Hangul vowels/trailers."""
    cp = ord(ch)
    return (
        ch == _ZWJ
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tones
        or 0xE0020 <= cp <= 0xE007F  # tag characters (subdivision flags)
        or 0x1160 <= cp <= 0x11FF  # Hangul jungseong/jongseong
        or 0xD7B0 <= cp <= 0xD7FF
    )


def is_grapheme_boundary(text: str, i: int) -> bool:
    """Whether ``text`` may be cut before index ``i`` without splitting a user-perceived
    character (a pragmatic subset of UAX #29)."""
    if i <= 0 or i >= len(text):
        return True
    a, b = text[i - 1], text[i]
    if a == "\r" and b == "\n":
        return False
    if _is_control(a) or _is_control(b):
        return True
    if _is_high_surrogate(a) and 0xDC00 <= ord(b) <= 0xDFFF:
        return False
    if a == _ZWJ or _attaches_to_previous(b):
        return False
    if _is_regional_indicator(a) and _is_regional_indicator(b):
        run = 0
        j = i - 1
        while j >= 0 and _is_regional_indicator(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0
    if _is_hangul_leading(a):
        return not (_is_hangul_leading(b) or 0xAC00 <= ord(b) <= 0xD7A3)
    return True


__all__ = [
    "DISCORD_MESSAGE_LIMIT",
    "FENCE_CLOSE",
    "Chunk",
    "chunk_text",
    "is_grapheme_boundary",
    "plan_chunks",
]
