"""Segmentation: exact offsets, structure-aware levels, fences kept whole, render()."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import check_spans

from prompt_attr_widget.core.errors import UsageError
from prompt_attr_widget.stages.segment import LEVELS, _segment_cached, render, segment

DOC = (
    "# Setup\n"
    "\n"
    "Dr. Smith runs the lab. Call him first!\n"
    "Then write the report.\n"
    "\n"
    "- Buy milk today.\n"
    "- Feed the cat. Water the plants.\n"
    "1. First numbered\n"
    "\n"
    "```python\n"
    "x = 1. \n"
    "\n"
    "print(x)  # Not a sentence. Really.\n"
    "```\n"
    "\n"
    "## Results\n"
    "All good here. Nothing else.\n"
)




def texts(spans):
    return [s.text for s in spans]


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_keeps_exact_offsets(level):
    spans = segment(DOC, level, window_tokens=5)
    check_spans(DOC, spans)
    assert len(spans) >= 2


def test_heading_level_makes_one_section_per_heading():
    spans = segment(DOC, "heading")
    assert len(spans) == 2
    assert spans[0].text.startswith("# Setup") and spans[0].text.endswith("```")
    assert spans[1].text == "## Results\nAll good here. Nothing else."
    assert [s.kind for s in spans] == ["heading", "heading"]


def test_heading_level_keeps_a_preamble_before_the_first_heading():
    prompt = "Intro text here.\n\n# One\nBody one.\n\n# Two\nBody two."
    assert texts(segment(prompt, "heading")) == ["Intro text here.", "# One\nBody one.", "# Two\nBody two."]
    assert segment(prompt, "heading")[0].kind == "text"


def test_paragraph_level():
    spans = segment(DOC, "paragraph")
    assert texts(spans) == [
        "# Setup",
        "Dr. Smith runs the lab. Call him first!\nThen write the report.",
        "- Buy milk today.\n- Feed the cat. Water the plants.\n1. First numbered",
        "```python\nx = 1. \n\nprint(x)  # Not a sentence. Really.\n```",
        "## Results",
        "All good here. Nothing else.",
    ]
    assert [s.kind for s in spans] == ["heading", "text", "text", "fence", "heading", "text"]


def test_sentence_level_splits_sentences_and_list_items_but_not_abbreviations():
    got = texts(segment(DOC, "sentence"))
    assert got == [
        "# Setup",
        "Dr. Smith runs the lab.",
        "Call him first!",
        "Then write the report.",
        "- Buy milk today.",
        "- Feed the cat.",
        "Water the plants.",
        "1. First numbered",
        "```python\nx = 1. \n\nprint(x)  # Not a sentence. Really.\n```",
        "## Results",
        "All good here.",
        "Nothing else.",
    ]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("Ask Dr. Smith about it. Then leave.", ["Ask Dr. Smith about it.", "Then leave."]),
        ("Use tools, e.g. Python or Rust. Keep it short.", ["Use tools, e.g. Python or Rust.", "Keep it short."]),
        ("That is, i.e. Monday. Fine.", ["That is, i.e. Monday.", "Fine."]),
        ("Born in the U.S. in May. Left later.", ["Born in the U.S. in May.", "Left later."]),
        # prompts are often written in lowercase: a lowercase start still begins a sentence
        ("He left. then he came back. Odd!", ["He left.", "then he came back.", "Odd!"]),
        ('She said "Stop." He stopped.', ['She said "Stop."', "He stopped."]),
        ("Wait... Really? Yes!", ["Wait...", "Really?", "Yes!"]),
    ],
)
def test_sentence_boundaries(prompt, expected):
    assert texts(segment(prompt, "sentence")) == expected


def test_list_items_are_split_even_without_sentence_ends():
    prompt = "Rules:\n- no swearing\n* be kind\n+ stay calm\n2) answer briefly\n• smile"
    got = texts(segment(prompt, "sentence"))
    assert got == ["Rules:", "- no swearing", "* be kind", "+ stay calm", "2) answer briefly", "• smile"]
    assert [s.kind for s in segment(prompt, "sentence")][1:] == ["list"] * 5


def test_line_level():
    prompt = "one line here\ntwo line here\n\n```\nfenced a\nfenced b\n```\nlast"
    assert texts(segment(prompt, "line")) == [
        "one line here",
        "two line here",
        "```\nfenced a\nfenced b\n```",
        "last",
    ]


def test_tokens_level_windows():
    prompt = "alpha beta gamma delta epsilon zeta eta"
    assert texts(segment(prompt, "tokens", window_tokens=3)) == ["alpha beta gamma", "delta epsilon zeta", "eta"]
    assert texts(segment(prompt, "tokens", window_tokens=100)) == [prompt]
    # punctuation counts as a token
    assert texts(segment("a, b.", "tokens", window_tokens=2)) == ["a,", "b."]


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_fences_are_never_split_at_any_level(fence):
    body = f"{fence}\nfirst. Second sentence.\n\n# not a heading\n- not an item\n\nThird.\n{fence}"
    prompt = f"Intro sentence. Another one.\n\n{body}\n\nOutro here. Bye now."
    start = prompt.index(body)
    for level in LEVELS:
        spans = segment(prompt, level, window_tokens=2)
        check_spans(prompt, spans)
        inside = [s for s in spans if s.start < start + len(body) and s.end > start]
        assert len(inside) == 1, (level, texts(spans))
        assert inside[0].start <= start and inside[0].end >= start + len(body)


def test_a_fence_closes_only_with_its_own_character_and_length():
    prompt = "Before.\n\n````\ninner ``` not closing\n```\n~~~\nstill inside. Yes.\n````\n\nAfter. End."
    spans = segment(prompt, "sentence")
    fence = [s for s in spans if s.kind == "fence"]
    assert len(fence) == 1
    assert fence[0].text.startswith("````") and fence[0].text.endswith("````")
    assert texts(spans)[-2:] == ["After.", "End."]


@pytest.mark.parametrize("level", LEVELS)
def test_an_unclosed_fence_runs_to_the_end(level):
    prompt = "Say hi. Say bye.\n\n~~~\ncode. More code.\n\nEven more. Done.\n"
    spans = segment(prompt, level, window_tokens=1)
    check_spans(prompt, spans)
    assert spans[-1].text == "~~~\ncode. More code.\n\nEven more. Done."
    assert spans[-1].kind == "fence"


@pytest.mark.parametrize("level", LEVELS)
def test_tokens_after_a_closed_fence_never_enter_a_following_unclosed_fence(level):
    # Regression: at the tokens level the first token of a second fence that
    # directly followed a first one escaped it as a separate, overlapping span.
    prompt = "~~~\r\n~~~\r\n```"
    spans = segment(prompt, level, window_tokens=1)
    check_spans(prompt, spans)
    assert texts(spans) == ["~~~\r\n~~~", "```"]


def test_crlf_prompt_offsets_and_boundaries():
    prompt = "# Title\r\n\r\nFirst one. Second one.\r\nThird line.\r\n\r\n- item a\r\n- item b\r\n"
    for level in LEVELS:
        spans = segment(prompt, level, window_tokens=3)
        check_spans(prompt, spans)
        assert all("\r" not in (s.text[0], s.text[-1]) for s in spans)
    assert texts(segment(prompt, "paragraph")) == [
        "# Title",
        "First one. Second one.\r\nThird line.",
        "- item a\r\n- item b",
    ]
    assert texts(segment(prompt, "sentence")) == [
        "# Title",
        "First one.",
        "Second one.",
        "Third line.",
        "- item a",
        "- item b",
    ]


def test_unicode_offsets_are_code_points():
    prompt = "Café ☕ ist gut. 😀 Emoji here! 日本語の文です。 Ne\u0301e more. Ünïcödé end."
    for level in LEVELS:
        check_spans(prompt, segment(prompt, level, window_tokens=2))
    got = texts(segment(prompt, "sentence"))
    assert got == ["Café ☕ ist gut.", "😀 Emoji here!", "日本語の文です。", "Ne\u0301e more.", "Ünïcödé end."]


def test_single_span_falls_back_to_a_finer_level():
    one_paragraph = "First sentence here. Second sentence here."
    assert texts(segment(one_paragraph, "paragraph")) == ["First sentence here.", "Second sentence here."]
    assert texts(segment(one_paragraph, "heading")) == ["First sentence here.", "Second sentence here."]
    one_sentence = "just one sentence with seven words in it"
    assert texts(segment(one_sentence, "sentence", window_tokens=4)) == ["just one sentence with", "seven words in it"]
    assert texts(segment(one_sentence, "line", window_tokens=4)) == ["just one sentence with", "seven words in it"]
    # the finest level has nothing to fall back to: one span is all there is
    assert texts(segment("word", "tokens")) == ["word"]


def test_auto_means_sentence():
    assert segment(DOC, "auto") == segment(DOC, "sentence")


def test_unknown_level_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown segment level"):
        segment("Some text. More.", "chapter")


@pytest.mark.parametrize("prompt", ["", " ", "\n\n", "\t \r\n", "\u3000"])
def test_empty_prompt_is_a_usage_error(prompt):
    with pytest.raises(UsageError, match="empty"):
        segment(prompt)
    with pytest.raises(UsageError, match="empty"):
        segment(prompt, spans=[(0, 1)])


def test_memoised():
    prompt = "Memo one. Memo two. Memo three " + "x" * 50
    _segment_cached.cache_clear()
    first = segment(prompt, "sentence")
    before = _segment_cached.cache_info()
    second = segment(prompt, "sentence")
    after = _segment_cached.cache_info()
    assert first == second
    assert first is not second  # callers get their own list
    assert after.hits == before.hits + 1 and after.misses == before.misses


# --- user-given spans -------------------------------------------------------


def test_user_spans_are_sorted_trimmed_and_indexed():
    prompt = "  alpha  beta gamma "
    spans = segment(prompt, spans=[(9, 20), (0, 8)])
    assert [(s.start, s.end, s.text) for s in spans] == [(2, 7, "alpha"), (9, 19, "beta gamma")]
    assert [s.index for s in spans] == [0, 1]
    check_spans(prompt, spans)
    # touching spans are fine
    assert len(segment("abcdef", spans=[(0, 3), (3, 6)])) == 2


@pytest.mark.parametrize(
    "bad, message",
    [
        ([(0, 99)], "outside"),
        ([(-1, 3)], "outside"),
        ([(3, 3)], "outside"),
        ([(4, 2)], "outside"),
        ([(0, 5), (3, 8)], "overlaps"),
        ([(5, 8), (0, 6)], "overlaps"),
        ([(5, 6)], "white space"),
    ],
)
def test_user_span_validation(bad, message):
    with pytest.raises(UsageError, match=message):
        segment("hello world", spans=bad)


# --- render -----------------------------------------------------------------


def test_render_keeping_everything_returns_the_prompt():
    for level in LEVELS:
        spans = segment(DOC, level, window_tokens=3)
        assert render(DOC, spans, [True] * len(spans)) == DOC
    crlf = "  One. Two.\r\n\r\nThree.\r\n"
    spans = segment(crlf, "sentence")
    assert render(crlf, spans, [True] * len(spans)) == crlf


def test_render_deleting_a_sentence_leaves_one_space():
    prompt = "One here. Two here. Three here."
    spans = segment(prompt, "sentence")
    assert render(prompt, spans, [True, False, True]) == "One here. Three here."
    assert render(prompt, spans, [False, True, True]) == "Two here. Three here."
    assert render(prompt, spans, [True, True, False]) == "One here. Two here."
    assert render(prompt, spans, [True, False, False]) == "One here."


def test_render_deleting_a_paragraph_leaves_one_blank_line():
    prompt = "Para one.\n\nPara two. Still two.\n\nPara three."
    spans = segment(prompt, "paragraph")
    assert render(prompt, spans, [True, False, True]) == "Para one.\n\nPara three."
    # deleting the last sentence of a paragraph keeps the paragraph break
    sentences = segment(prompt, "sentence")
    assert texts(sentences) == ["Para one.", "Para two.", "Still two.", "Para three."]
    assert render(prompt, sentences, [True, True, False, True]) == "Para one.\n\nPara two.\n\nPara three."
    assert render(prompt, sentences, [True, False, False, True]) == "Para one.\n\nPara three."
    # a line break between sentences survives as the strongest gap, not a space
    lines = "A one.\nB two. C three."
    ls = segment(lines, "sentence")
    assert render(lines, ls, [True, False, True]) == "A one.\nC three."


def test_render_deleting_everything_keeps_only_the_outer_white_space():
    prompt = "  One. Two.\n"
    spans = segment(prompt, "sentence")
    assert render(prompt, spans, [False, False]) == "  \n"


def test_render_with_no_spans_is_identity():
    assert render("abc", [], []) == "abc"


# --- property test ------------------------------------------------------------

_CHARS = list("ab Cd.!?\n\r\t#`~-*1)•é😀中\u0301\x00\x1b\x0b\x0c\x1c\x85\u2028\u00a0\u202e")
_PIECES = ["```", "~~~", "# ", "\r\n", "\n\n", "Dr. ", "e.g. ", "- ", "1. ", "Hello. ", "world! ", "\n```\n", "\n~~~~\n"]
_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(_CHARS), st.sampled_from(_PIECES)), max_size=60).map("".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT, st.integers(1, 6))
def test_property_offsets_exact_sorted_disjoint_for_every_level(prompt, window):
    if not prompt.strip():
        with pytest.raises(UsageError):
            segment(prompt)
        return
    for level in LEVELS:
        spans = segment(prompt, level, window_tokens=window)
        check_spans(prompt, spans)
        assert render(prompt, spans, [True] * len(spans)) == prompt
        n = len(spans)
        if n > 1:
            first, last = spans[0], spans[-1]
            assert render(prompt, spans, [i != 0 for i in range(n)]) == prompt[: first.start] + prompt[spans[1].start :]
            assert render(prompt, spans, [i != n - 1 for i in range(n)]) == prompt[: spans[-2].end] + prompt[last.end :]
        if n > 2:
            before, gone, after = spans[0], spans[1], spans[2]
            gaps = [prompt[before.end : gone.start], prompt[gone.end : after.start]]
            strongest = max(gaps, key=lambda g: (g.count("\n"), len(g)))
            keep = [i != 1 for i in range(n)]
            assert render(prompt, spans, keep) == prompt[: before.end] + strongest + prompt[after.start :]


def render_span_by_span(prompt, spans, keep):
    """The plain definition `render` must agree with: walk every span, keep the strongest gap."""
    pieces, separator, emitted = [prompt[: spans[0].start]], None, False
    for i, (span, kept) in enumerate(zip(spans, keep, strict=True)):
        gap = prompt[span.end : spans[i + 1].start] if i + 1 < len(spans) else ""
        if kept:
            if emitted and separator is not None:
                pieces.append(separator)
            pieces.append(span.text)
            emitted, separator = True, gap
        elif separator is not None:
            separator = max(separator, gap, key=lambda g: (g.count("\n"), len(g)))
    pieces.append(prompt[spans[-1].end :])
    return "".join(pieces)


PIECES = ["Alpha", "beta.", "Gamma!", "delta?", "# Head", "- item", "x", ""]
GLUE = [" ", "\n", " \n ", "\n\n", "  ", "\t"]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(GLUE)), min_size=2, max_size=30),
    st.sampled_from(["sentence", "line", "paragraph", "tokens"]),
    st.randoms(use_true_random=False),
)
def test_render_by_runs_equals_the_span_by_span_definition(parts, level, rng):
    prompt = "".join(p + g for p, g in parts)
    if not prompt.strip():
        return
    spans = segment(prompt, level)
    keep = [rng.random() < 0.6 for _ in spans]
    assert render(prompt, spans, keep) == render_span_by_span(prompt, spans, keep)


def test_render_refuses_a_mask_of_another_length():
    spans = segment("One. Two. Three.", "sentence")
    with pytest.raises(ValueError):
        render("One. Two. Three.", spans, [True, False])
