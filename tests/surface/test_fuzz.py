"""Fuzzing the three doors untrusted input comes through: the segmenter, the options, the run files.

Each may refuse its input, but only with the documented error (UsageError,
argparse's exit 2, a PromptAttrError for a corrupted run), never with a
traceback, and a run id can never reach outside the runs folder.
test_segment.py already proves exact, sorted, disjoint offsets on short
texts; here the texts hold lone surrogates, huge lines and CR/CRLF mixes,
and every non-white-space character must land in a span.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import check_spans

import prompt_attr
from prompt_attr import PromptAttrError, RunNotFound, UsageError
from prompt_attr_widget import cli
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.config import AttributionConfig
from prompt_attr_widget.stages.segment import LEVELS
from prompt_attr_widget.store.runs import RUN_ID, resolve_run_dir

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- the segmenter ------------------------------------------------------------------------------

_PIECES = ["\r\n", "\r", "\n", "\n\n", "```", "~~~", "# ", "- ", "1. ", "Dr. ", "e.g. ", "Hi. ", "ok! ", "…", "。"]
_CHARS = st.one_of(
    st.characters(),  # any code point but surrogates
    st.characters(min_codepoint=0, max_codepoint=0x9F),  # C0, DEL, C1
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates
    st.sampled_from("\u202e\u2066\u2069\u200b\u200d\ufeff\u2028\u00a0\x85"),
)
_SHORT = st.lists(st.one_of(_CHARS, st.sampled_from(_PIECES)), max_size=40).map("".join)
_HUGE_LINE = st.builds(lambda unit, n: unit * n, st.sampled_from(["a", ".", "?!", "a.", "# ", "`", " ", "\t", "x "]),
                       st.integers(2_000, 30_000))
TEXT = st.builds(lambda a, huge, b: a + huge + b, _SHORT, st.just("") | _HUGE_LINE, _SHORT)


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def check_segmentation(text: str, spans) -> None:
    """test_segment's invariants, plus: no non-white-space character is left out of every span."""
    check_spans(text, spans)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    covered = bytearray(len(text))
    for s in spans:
        covered[s.start : s.end] = b"\x01" * (s.end - s.start)
    lost = [i for i, c in enumerate(text) if not covered[i] and not c.isspace()]
    assert not lost, [repr(text[i]) for i in lost[:5]]


@FUZZ
@given(TEXT, st.integers(1, 50))
def test_segment_every_level_on_hostile_text(text, window):
    for level in (*LEVELS, "auto"):
        try:
            spans = prompt_attr.segment(text, level, window_tokens=window)
        except UsageError:
            assert not text.strip() or has_surrogate(text)
            continue
        assert not has_surrogate(text)
        check_segmentation(text, spans)


@FUZZ
@given(TEXT, st.lists(st.tuples(st.integers(-5, 400), st.integers(-5, 400)), max_size=8))
def test_segment_user_spans(text, ranges):
    try:
        spans = prompt_attr.segment(text, spans=ranges)
    except UsageError:
        return
    check_spans(text, spans)
    for s in spans:  # each span lies inside one of the ranges it was given
        assert any(a <= s.start and s.end <= b for a, b in ranges)


# --- the options ------------------------------------------------------------------------------

_TEXT_VALUES = st.one_of(
    st.sampled_from(["", " ", ":", "3:1", "0:2", "a:b", "2:", "-1:5", "fake", "local", "(", "[a-", "(?P<secret>x)",
                     "http://10.0.0.1:80/v1", "http://u:p@localhost/v1", "\udcff", "\x00", "\x1b[2J", "--", "-"]),
    st.text(max_size=8),
)
# Mostly values argparse accepts, so the validation behind it is what gets fuzzed.
_INTS = st.integers(-10**12, 10**12).map(str) | st.sampled_from(["-1", "0", "99999999999999999999999", "1e3", ""])
_FLOATS = st.floats().map(repr) | st.sampled_from(["-1", "nan", "-inf", "1e309", "-0", "1_000", ""])
_CHOICES = {"--segment": ["heading", "paragraph", "sentence", "line", "tokens", "auto"],
            "--method": ["hierarchical", "loo", "surrogate", "mc"], "--scorer": ["auto", "logprob", "embedding"],
            "--faithfulness": ["off", "cheap", "full"], "--logprob-template": ["chatml", "plain", "llama"]}
_VALUED = {
    **{f: _INTS for f in ("--window-tokens", "--masks", "--noise-repeats", "--seed", "--concurrency", "--max-tokens",
                          "--max-retries", "--top")},
    **{f: _FLOATS for f in ("--keep-prob", "--min-effect", "--threshold", "--budget", "--price-in", "--price-out",
                            "--rpm", "--timeout")},
    **{f: st.sampled_from(c) for f, c in _CHOICES.items()},
    **{f: _TEXT_VALUES for f in ("--model", "--base-url", "--embed-model", "--system", "--target", "--target-range",
                                 "--runs-dir", "--redact-pattern")},
}
_SWITCHES = ["--no-cache", "--no-color", "--redact", "--allow-insecure", "--json"]
_OPTION = st.one_of(
    st.sampled_from(sorted(_VALUED)).flatmap(lambda flag: _VALUED[flag].map(lambda v: [flag, v])),
    st.sampled_from(_SWITCHES).map(lambda s: [s]),
)
_STRAY = st.sampled_from([[]] * 6 + [["--bogus"], ["stray"], ["--segment"], ["-h"]])  # the last two: no value, help
ARGV = st.tuples(st.sampled_from(["run"] * 6 + ["show", "ls", "resume", "", "bogus"]),
                 st.lists(_OPTION, max_size=6), _STRAY).map(
    lambda t: [t[0], *(["prompt.txt"] if t[0] == "run" else []), *(x for opt in t[1] for x in opt), *t[2]]
)


def build_config(argv: list[str]) -> AttributionConfig | None:
    """What `prompt-attr run` does with its arguments before the first model call."""
    args = cli._parser().parse_args(argv)
    if args.command != "run":
        return None
    options = cli.run_options(args)
    options.pop("runs_dir", None)  # attribute() takes the folder itself, not through the config
    return AttributionConfig.build(**options)


@FUZZ
@given(ARGV)
@example(["run", "prompt.txt", "--price-in", "-1"])  # was a pydantic traceback (cli built Price itself)
@example(["run", "prompt.txt", "--system", "\udcff"])  # undecodable argv byte: would crash writing run.json
def test_option_parsing_fails_only_with_usage_errors(argv):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            build_config(argv)
    except SystemExit as exc:
        assert exc.code == 2 or (exc.code == 0 and "-h" in argv)
    except UsageError:
        pass


# --- the run files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """One finished fake run (its runs folder), copied afresh for every example."""
    runs = tmp_path_factory.mktemp("stored")
    prompt = "You Are A Guide. it rains. Paris Is Big. we eat. The Tower Opens."
    a = prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=runs, method="loo", cache=False)
    assert a.status == "finished"
    return runs


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**40, 10**40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_ODD_NUMBERS = st.sampled_from([10**400, -10**400, 2**63, -1, 0, 1, 7, 1e308, math.nan, math.inf, -math.inf, 10**6])


def _paths(value, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _is_reference(path) -> bool:
    """A number that points into the prompt, the spans or the evaluations."""
    return bool(path) and (path[-1] in ("index", "start", "end", "id", "evaluation") or "dropped" in path or "group" in path)


def _at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def _replaced(doc, path, new):
    if not path:
        return new
    doc[path[0]] = _replaced(doc[path[0]], path[1:], new)
    return doc


@st.composite
def corrupted(draw, original: bytes) -> bytes:
    """A truncation, bit flips, random bytes, random JSON, or the real document with one value swapped."""
    kind = draw(st.sampled_from(["truncate", "flip", "bytes", "json", "swap", "number", "reference", "reference"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original)))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(_JSON)).encode()
    doc = json.loads(original)
    paths = list(_paths(doc))
    if kind in ("number", "reference"):  # a score, count or (reference) index, offset or id made odd
        paths = [p for p in paths if type(_at(doc, p)) in (int, float) and (kind == "number" or _is_reference(p))] or paths
    path = draw(st.sampled_from(paths))
    new = draw(_JSON | _ODD_NUMBERS if kind == "swap" else _ODD_NUMBERS)
    return json.dumps(_replaced(doc, path, new)).encode()  # NaN, Infinity, 1e400 included


def corrupt_events(draw, original: bytes) -> bytes:
    lines = original.splitlines(keepends=True)
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = draw(corrupted(lines[i].rstrip(b"\n"))) + b"\n"
    return b"".join(lines)


def assert_loads_or_refuses(runs: Path, run_id: str) -> None:
    """load_run, list_runs, `show`, `ls`, `export` and `tag`: a clean result or a PromptAttrError,
    nothing else, and never a spend of "$nan"."""
    with contextlib.suppress(PromptAttrError):
        prompt_attr.load_run(run_id, runs_dir=runs)
    prompt_attr.list_runs(runs)
    where = ["--runs-dir", str(runs)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["show", run_id, *where, "--no-color"]) in (0, 1)
        assert cli.main(["show", run_id, *where, "--json"]) in (0, 1)
        assert cli.main(["ls", *where]) == 0
        assert cli.main(["ls", "--json", *where]) == 0
        assert cli.main(["export", run_id, "--format", "json", *where]) in (0, 1)
        assert cli.main(["tag", run_id, "experimental", *where]) in (0, 1)  # writes tags.json
    assert "$nan" not in out.getvalue() and "$inf" not in out.getvalue()


_RUN_FILES = ["run.json", "events.jsonl", "summary.json", "tags.json"]


@st.composite
def wrong_summary(draw, original: bytes) -> bytes:
    """summary.json with one field of another type (or NaN), still the size run.json has: so it is what ls reads."""
    doc = json.loads(original)
    key = draw(st.sampled_from(sorted(k for k in doc if k != "run_json_bytes")))
    doc[key] = draw(_JSON | _ODD_NUMBERS | st.sampled_from([math.nan, "nan", [], {}, True]))
    return json.dumps(doc).encode()


@st.composite
def non_finite(draw, original: bytes) -> bytes:
    """The real document with one of its numbers (a spend, a cost, a score, a count) NaN or infinite."""
    doc = json.loads(original)
    paths = [p for p in _paths(doc) if type(_at(doc, p)) in (int, float) and p]
    money = [p for p in paths if p[-1] in ("usd", "cost_usd", "projected_usd")]
    path = draw(st.sampled_from(money) if money and draw(st.booleans()) else st.sampled_from(paths))
    return json.dumps(_replaced(doc, path, draw(st.sampled_from([math.nan, math.inf, -math.inf])))).encode()


@FUZZ
@given(data=st.data(), target=st.sampled_from(["run.json", "events.jsonl", "both", "running", "summary.json",
                                                "summary types", "directory", "nan"]))
@example(data=None, target="directory")  # always tried: run.json a directory (no draws: data is None)
def test_corrupted_run_files_load_or_fail_cleanly(stored, data, target):
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(shutil.copytree(stored, Path(tmp) / "runs"))
        (folder,) = runs.iterdir()
        run_json, events, summary = folder / "run.json", folder / "events.jsonl", folder / "summary.json"
        if target in ("run.json", "both"):
            run_json.write_bytes(data.draw(corrupted(run_json.read_bytes())))
        if target in ("events.jsonl", "both"):
            events.write_bytes(corrupt_events(data.draw, events.read_bytes()))
        if target == "running":  # run.json says running: the record is rebuilt from the (corrupted) events
            record = json.loads(run_json.read_bytes())
            run_json.write_text(json.dumps({**record, "status": "running"}))
            events.write_bytes(corrupt_events(data.draw, events.read_bytes()))
        if target == "summary.json":
            summary.write_bytes(data.draw(corrupted(summary.read_bytes())))
        if target == "summary types":
            summary.write_bytes(data.draw(wrong_summary(summary.read_bytes())))
        if target == "directory":  # one or more of the run's files is a directory (empty or not)
            names = ["run.json"] if data is None else data.draw(st.sets(st.sampled_from(_RUN_FILES), min_size=1))
            for name in names:
                (folder / name).unlink(missing_ok=True)
                (folder / name).mkdir()
                if data is not None and data.draw(st.booleans()):
                    (folder / name / "x").write_text("{}")
        if target == "nan":
            victim = data.draw(st.sampled_from([run_json, summary, "both"]))
            for path in [run_json, summary] if victim == "both" else [victim]:
                path.write_bytes(data.draw(non_finite(path.read_bytes())))
        assert_loads_or_refuses(runs, folder.name)


# --- run ids ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fenced(tmp_path_factory, stored) -> tuple[Path, str, Path]:
    """A runs folder with one run, and a sentinel run right outside it that must never load."""
    root = tmp_path_factory.mktemp("fenced")
    runs = Path(shutil.copytree(stored, root / "runs"))
    (inside,) = (p.name for p in runs.iterdir())
    sentinel = root / "outside" / "20990101T000000000Z-deadbeef"
    shutil.copytree(runs / inside, sentinel)
    record = json.loads((sentinel / "run.json").read_text("utf-8"))
    (sentinel / "run.json").write_text(json.dumps({**record, "run_id": sentinel.name, "prompt": "SENTINEL"}), "utf-8")
    return runs, inside, sentinel


def _run_ids(inside: str, sentinel: Path):
    tricks = [
        "latest", inside, inside[:9], inside.upper(), f"../outside/{sentinel.name}", f"../{sentinel.parent.name}",
        str(sentinel), str(sentinel.parent), f"{inside}/../../outside/{sentinel.name}", sentinel.name,
        f"{inside}\x00", f"{inside}\n", "..", ".", "~", "/", "\\..\\outside", "20990101T", "2099", "x" * 5000,
        "2" * 31, "%2e%2e%2f", "\u2024\u2024/outside", "２０２６", "\udcff",
    ]
    return st.one_of(st.sampled_from(tricks), st.text(max_size=40), st.text(alphabet="0123456789TZabcdef-./", max_size=40))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_run_ids_never_reach_outside_the_runs_folder(fenced, data):
    runs, inside, sentinel = fenced
    run_id = data.draw(_run_ids(inside, sentinel))
    try:
        path = resolve_run_dir(run_id, runs)
    except (UsageError, RunNotFound):
        path = None
    if path is not None:
        assert path.parent == runs and RUN_ID.match(path.name)
    try:
        loaded = prompt_attr.load_run(run_id, runs_dir=runs)
    except (UsageError, RunNotFound):
        return
    assert loaded.record.prompt != "SENTINEL" and loaded.run_id == inside


# What the fuzzer found: each part of a record validated, but not what ties them together.
CORRUPTIONS = {
    "a score names no span": lambda r: r["attribution"][1].update(index=7),
    "a score names span -1": lambda r: r["attribution"][1].update(index=-1),
    "a huge span index": lambda r: r["attribution"][1].update(index=10**400),
    "the spans are gone": lambda r: r.update(spans=[]),
    "a span ends past the prompt": lambda r: r["spans"][4].update(end=10**6),
    "group fraction zero": lambda r: r["config"].update(method="hierarchical", group_fraction=0),
    "threshold not a number": lambda r: r["config"].update(method="hierarchical", group_fraction=1, refine_threshold="x"),
}


def _rewrite(path: Path, change) -> None:
    record = json.loads(path.read_text("utf-8"))
    change(record)
    path.write_text(json.dumps(record), "utf-8")


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_an_inconsistent_run_is_reported_as_corrupted(stored, tmp_path, capsys, name):
    runs = Path(shutil.copytree(stored, tmp_path / "runs"))
    (folder,) = runs.iterdir()
    _rewrite(folder / "run.json", CORRUPTIONS[name])
    with pytest.raises(PromptAttrError, match="is corrupted"):
        prompt_attr.load_run(folder.name, runs_dir=runs)
    assert [r.status for r in prompt_attr.list_runs(runs)] == ["corrupt"]
    assert cli.main(["show", folder.name, "--runs-dir", str(runs)]) == 1
    assert "is corrupted" in capsys.readouterr().err


def test_a_run_rebuilt_from_inconsistent_events_is_reported_as_corrupted(stored, tmp_path):
    runs = Path(shutil.copytree(stored, tmp_path / "runs"))
    (folder,) = runs.iterdir()
    (folder / "run.json").unlink()
    lines = [json.loads(line) for line in (folder / "events.jsonl").read_text("utf-8").splitlines()]
    for event in lines:
        if event["type"] == "estimate":
            event["attribution"][0]["index"] = 99
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines), "utf-8")
    with pytest.raises(PromptAttrError, match="names span 99"):
        prompt_attr.load_run(folder.name, runs_dir=runs)
