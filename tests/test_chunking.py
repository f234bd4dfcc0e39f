"""chunk_text / plan_chunks: limits, preferred split points, fences, graphemes, properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diswoot.bridge.chunking import (
    FENCE_CLOSE,
    Chunk,
    chunk_text,
    is_grapheme_boundary,
    plan_chunks,
)

FENCE_RUN = re.compile(r"`{3,}")
REOPEN = re.compile(r"```[A-Za-z0-9_+\-.#]*\n")


def fence_parity(text: str) -> int:
    return len(FENCE_RUN.findall(text)) % 2


def assert_contract(text: str, limit: int, chunks: list[Chunk]) -> None:
    """The exact invariant documented in diswoot.bridge.chunking."""
    if not text.strip():
        assert chunks == []
        return
    assert chunks
    previous_end = 0
    for c in chunks:
        assert 0 < len(c.text) <= limit
        assert c.body == text[c.start : c.end]
        assert text[previous_end : c.start].strip() == "", "separator must be whitespace"
        assert c.body.strip(), "body must have content"
        assert not c.body[-1].isspace(), "trailing whitespace belongs to the separator"
        assert c.prefix == "" or REOPEN.fullmatch(c.prefix)
        assert c.suffix in ("", FENCE_CLOSE)
        previous_end = c.end
    assert text[previous_end:].strip() == ""
    assert chunks[-1].suffix == ""
    assert [c.text for c in chunks] == chunk_text(text, limit)


def assert_fences_balanced(text: str, chunks: list[Chunk]) -> None:
    for c in chunks[:-1]:
        assert fence_parity(c.text) == 0, f"unbalanced fence in {c.text!r}"
    assert fence_parity(chunks[-1].text) == fence_parity(text)
    for c in chunks:
        assert bool(c.prefix) == bool(fence_parity(text[: c.start]))


# --------------------------------------------------------------------------- examples
@pytest.mark.parametrize("blank", ["", " ", "\n\n\t ", "\u3000\u2028"])
def test_blank_input_gives_no_chunks(blank: str) -> None:
    assert chunk_text(blank) == []


def test_short_text_is_one_chunk_without_trailing_whitespace() -> None:
    assert chunk_text("hello\n") == ["hello"]
    assert chunk_text("\n\nhello  world\n\n") == ["hello  world"]
    assert chunk_text("x" * 2000) == ["x" * 2000]


def test_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError):
        chunk_text("abc", 0)


def test_hard_split_of_one_long_word() -> None:
    assert [len(c) for c in chunk_text("x" * 4500)] == [2000, 2000, 500]


def test_prefers_paragraph_breaks() -> None:
    text = "A" * 1200 + "\n\n" + "B" * 500 + "\n" + "C" * 500 + " " + "D" * 100
    assert chunk_text(text) == ["A" * 1200, "B" * 500 + "\n" + "C" * 500 + " " + "D" * 100]


def test_prefers_line_breaks_over_spaces() -> None:
    text = ("word " * 250).strip() + "\n" + ("more " * 300).strip()
    chunks = chunk_text(text)
    assert chunks[0] == ("word " * 250).strip()
    assert_contract(text, 2000, plan_chunks(text))


def test_breaks_that_leave_a_tiny_chunk_lose_to_later_ones() -> None:
    text = "intro\n\n" + " ".join(["word"] * 600)
    chunks = chunk_text(text, 2000)
    assert chunks[0].startswith("intro\n\nword word")
    assert 1990 <= len(chunks[0]) <= 2000
    assert_contract(text, 2000, plan_chunks(text))


def test_word_boundaries() -> None:
    assert chunk_text("hello world foo bar", 8) == ["hello", "world", "foo bar"]


def test_indentation_of_a_new_line_is_kept() -> None:
    assert chunk_text("  hi there\n   indented more text", 12) == [
        "  hi there",
        "   indented",
        "more text",
    ]


def test_fenced_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"    line_{i} = {i} * 2" for i in range(30))
    text = "Here you go:\n```python\n" + code + "\n```\nDone."
    chunks = plan_chunks(text, 200)
    assert len(chunks) > 2
    assert chunks[0].text.startswith("Here you go:\n```python\n    line_0")
    for c in chunks[:-1]:
        assert c.text.endswith("\n```")
    for c in chunks[1:]:
        assert c.text.startswith("```python\n    line_")  # indentation preserved
    assert chunks[-1].text.endswith("\n```\nDone.")
    assert_contract(text, 200, chunks)
    assert_fences_balanced(text, chunks)


def test_whole_fence_moves_to_the_next_chunk_when_that_avoids_splitting_it() -> None:
    prose = " ".join(["words"] * 200)  # 1199 chars
    block = "```js\n" + "\n".join(["console.log(1);"] * 40) + "\n```"  # 645 chars
    text = prose + "\n\n" + block
    assert chunk_text(text, 1500) == [prose, block]


def test_never_cuts_right_after_an_opener_or_before_a_closer() -> None:
    text = "x" * 40 + "\n```py\n" + "y = 1\n" * 30 + "```\nz"
    chunks = plan_chunks(text, 60)
    assert_contract(text, 60, chunks)
    assert_fences_balanced(text, chunks)
    for c in chunks:
        assert not c.text.endswith("```py\n```")
        assert not c.text.startswith("```py\n```")


def test_unclosed_fence_stays_unclosed_only_in_the_last_chunk() -> None:
    text = "```\n" + "line of code\n" * 100
    chunks = plan_chunks(text, 100)
    assert_fences_balanced(text, chunks)
    assert not chunks[-1].text.endswith("```")


def test_long_language_tag_is_dropped_when_the_limit_is_small() -> None:
    text = "```averyveryverylonglanguagename\n" + "code line\n" * 20 + "```"
    chunks = plan_chunks(text, 40)
    assert_contract(text, 40, chunks)
    assert_fences_balanced(text, chunks)
    assert {c.prefix for c in chunks[1:]} == {"```\n"}


def test_tiny_limits_skip_fence_repair_but_keep_the_contract() -> None:
    text = "```py\nprint(1)\nprint(2)\n```"
    chunks = plan_chunks(text, 7)
    assert_contract(text, 7, chunks)
    assert all(c.prefix == c.suffix == "" for c in chunks)


def test_limit_one() -> None:
    assert chunk_text("ab c", 1) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("👨\u200d👩\u200d👧\u200d👦" * 2, 8, ["👨\u200d👩\u200d👧\u200d👦"] * 2),
        ("🇩🇪🇫🇷🇮🇹", 3, ["🇩🇪", "🇫🇷", "🇮🇹"]),
        ("e\u0301" * 5, 4, ["e\u0301e\u0301", "e\u0301e\u0301", "e\u0301"]),
        ("👍🏽👍🏽", 3, ["👍🏽", "👍🏽"]),
        ("a\r\nb", 2, ["a", "b"]),
        ("한국어", 1, ["한", "국", "어"]),
        ("\u1112\u1161\u11ab\u1112\u1161\u11ab", 4, ["\u1112\u1161\u11ab", "\u1112\u1161\u11ab"]),
    ],
)
def test_keeps_grapheme_clusters_whole(text: str, limit: int, expected: list[str]) -> None:
    assert chunk_text(text, limit) == expected


def test_cluster_longer_than_the_limit_is_split_anyway() -> None:
    text = "a" + "\u0301" * 10
    chunks = plan_chunks(text, 4)
    assert_contract(text, 4, chunks)
    assert "".join(c.body for c in chunks) == text


def test_grapheme_boundary_helper() -> None:
    assert is_grapheme_boundary("ab", 1)
    assert not is_grapheme_boundary("e\u0301", 1)
    assert not is_grapheme_boundary("a\u200db", 2)
    assert not is_grapheme_boundary("\r\n", 1)
    assert is_grapheme_boundary("\n\u0301", 1)  # controls always break
    assert is_grapheme_boundary("🇩🇪🇫🇷", 2)
    assert not is_grapheme_boundary("🇩🇪🇫🇷", 1)
    assert not is_grapheme_boundary("🇩🇪🇫🇷", 3)
    assert is_grapheme_boundary("", 0)


def test_long_text_performance_and_contract() -> None:
    text = ("lorem ipsum dolor sit amet, " * 20 + "\n") * 400  # ~225k chars
    chunks = plan_chunks(text)
    assert_contract(text, 2000, chunks)
    assert len(chunks) == 134  # three 561-char lines per chunk: line breaks beat spaces


def test_huge_code_block_is_linear() -> None:
    text = "```py\n" + "value = compute(value) + 1  # comment\n" * 6000 + "```"  # ~230k chars
    chunks = plan_chunks(text)
    assert_contract(text, 2000, chunks)
    assert_fences_balanced(text, chunks)


# --------------------------------------------------------------------------- properties
@settings(max_examples=400)
@given(st.text(), st.integers(min_value=1, max_value=120))
def test_contract_holds_for_any_text(text: str, limit: int) -> None:
    assert_contract(text, limit, plan_chunks(text, limit))


@settings(max_examples=200)
@given(
    st.text(alphabet=st.sampled_from(list("ab `\n\t\u0301\u200d🇩👍🏽")), max_size=400),
    st.integers(min_value=1, max_value=60),
)
def test_contract_holds_for_adversarial_alphabets(text: str, limit: int) -> None:
    assert_contract(text, limit, plan_chunks(text, limit))


CLUSTERS = [
    "👨\u200d👩\u200d👧\u200d👦",
    "🇩🇪",
    "e\u0301\u0302",
    "👍🏽",
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "각",
]
words = st.one_of(
    st.text(alphabet="abcdefghij", min_size=1, max_size=10),
    st.sampled_from(CLUSTERS),
)
separators = st.sampled_from([" ", "  ", "\n", "\n\n", "\n    "])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, set[int]]:
    """Prose and fenced blocks; returns the text and the forbidden (intra-atom) cut points."""
    pieces: list[str] = []
    forbidden: set[int] = set()
    length = 0

    def add(atom: str, atomic: bool) -> None:
        nonlocal length
        if atomic:
            forbidden.update(range(length + 1, length + len(atom)))
        pieces.append(atom)
        length += len(atom)

    def fence(closed: bool) -> None:
        add("```" + draw(st.sampled_from(["", "py", "js", "c++", "diff"])), True)
        add("\n", False)
        for _ in range(draw(st.integers(min_value=1, max_value=15))):
            add(draw(words), True)
            add(draw(separators), False)
        if closed:
            add("x", True)
            add("\n", False)
            add("```", True)

    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        if draw(st.booleans()):
            fence(closed=True)
        else:
            for _ in range(draw(st.integers(min_value=1, max_value=30))):
                add(draw(words), True)
                add(draw(separators), False)
        add(draw(st.sampled_from(["\n", "\n\n"])), False)
    if draw(st.integers(0, 9)) == 0:
        fence(closed=False)  # a block left open at the very end
    return "".join(pieces), forbidden


@settings(max_examples=150)
@given(documents(), st.integers(min_value=32, max_value=400))
def test_structured_documents(doc: tuple[str, set[int]], limit: int) -> None:
    text, forbidden = doc
    chunks = plan_chunks(text, limit)
    assert_contract(text, limit, chunks)
    assert_fences_balanced(text, chunks)
    for c in chunks:
        assert c.start not in forbidden and c.end not in forbidden, "cut inside an atom"


@given(st.text(min_size=1), st.integers(min_value=1, max_value=80))
def test_short_enough_text_is_a_single_trimmed_chunk(text: str, limit: int) -> None:
    stripped = text.rstrip()
    if stripped.strip() and len(stripped.lstrip()) <= limit // 2:
        [only] = plan_chunks(text, limit)
        assert only.body.strip() == text.strip()
