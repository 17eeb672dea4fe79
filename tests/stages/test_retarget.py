"""Any part of the answer, explained from a run's stored evaluations with no model call.

The fake backend scores each answer word by whether the prompt holds it, so
each sentence of its answer is driven by different prompt sentences; the
equality with a fresh targeted run is checked here for every estimator, and
on the real local model in tests/backends/test_local_model.py.
"""

from __future__ import annotations

import json
import math
import os
import zlib

import pytest

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget.backends.base import Completion
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.stages.segment import answer_parts
from prompt_attr_widget.store.tokens import FILE
from prompt_attr_widget.views.html import heatmap_html
from prompt_attr_widget.views.terminal import top_table

ANSWER = "The Pro is Discontinued. We offer a Free Mini instead. Our Store opens at Nine. 👋 Thanks Friend!"
PROMPT = (
    "If asked about the Pro, say it is Discontinued. "
    "Offer a Free Mini to every caller. "
    "The Store opens at Nine every day. "
    "Be warm: say Thanks to every Friend. "
    "The weather is mild today. "
    "Bread is baked at dawn."
)


class Answering(FakeBackend):
    """The fake model with a fixed multi-sentence answer (its log-probabilities as the fake's)."""

    def __init__(self, answer: str = ANSWER, **kwargs):
        super().__init__(logprobs=kwargs.pop("logprobs", True), **kwargs)
        self.answer = answer

    async def complete(self, messages, params):
        self.calls += 1
        return Completion(self.answer, prompt_tokens=40, completion_tokens=20, finish_reason="stop")


def calls(backend) -> int:
    return backend.calls + backend.embed_calls + backend.logprob_calls


def run(runs_dir, backend=None, **options):
    options = {"method": "loo", "cache": False, "behaviour_checks": 0, **options}  # numbers, not verdicts
    return prompt_attr.attribute(PROMPT, backend=backend or Answering(), runs_dir=runs_dir, **options)


def assert_same(derived, fresh, tol=1e-3):
    """The derived view of a part equals a run targeted at it: every score, error and verdict."""
    assert derived.record.target == fresh.record.target
    assert derived.record.scorer == fresh.record.scorer
    assert [s.index for s in derived.spans] == [s.index for s in fresh.spans]
    for a, b in zip(derived.spans, fresh.spans, strict=True):
        assert (a.score is None) == (b.score is None)
        if a.score is not None:
            assert abs(a.score - b.score) <= tol, (a, b)
        assert (a.stderr is None) == (b.stderr is None)
        if a.stderr is not None:
            assert abs(a.stderr - b.stderr) <= tol, (a, b)
        assert a.significant == b.significant, (a, b)
    assert abs(derived.noise_floor - fresh.noise_floor) <= tol


# --- the answer's parts --------------------------------------------------------------------------


def test_answer_parts_are_sentences_list_lines_and_code_lines_with_exact_ranges():
    text = "Here it is. Two, e.g. this.\n- first item. still it\n- second\n\n```py\nx = 1\n\ny = 2\n```\n# Done\nBye!"
    parts = answer_parts(text)
    assert [p.text for p in parts] == ["Here it is.", "Two, e.g. this.", "- first item. still it", "- second",
                                       "x = 1", "y = 2", "# Done", "Bye!"]
    assert [p.kind for p in parts] == ["text", "text", "list", "list", "code", "code", "heading", "text"]
    assert all(text[p.start : p.end] == p.text for p in parts)
    assert answer_parts("") == [] and answer_parts("   \n") == []
    assert [p.text for p in answer_parts("One sentence only")] == ["One sentence only"]


# --- for_target equals a targeted run, with no model call ---------------------------------------


@pytest.mark.parametrize("method", ["loo", "surrogate"])
@pytest.mark.parametrize("target", ["Discontinued", (55, 79), "Thanks Friend!"])
def test_for_target_equals_a_fresh_targeted_run_and_asks_no_model(runs_dir, method, target):
    backend = Answering()
    whole = run(runs_dir, backend, method=method, masks=24)
    before = calls(backend)
    derived = whole.for_target(target)
    assert calls(backend) == before  # nothing asked
    fresh = run(runs_dir, Answering(), method=method, masks=24, target=target)
    assert_same(derived, fresh)
    assert any("no model call" in n for n in derived.notes())
    assert derived.run_id == whole.run_id and derived.path == whole.path


def test_a_part_after_an_emoji_is_counted_in_code_points(runs_dir):
    whole = run(runs_dir)
    at = ANSWER.find("Thanks")
    assert ANSWER[at - 2] == "👋"  # one code point, two UTF-16 units
    derived = whole.for_target((at, at + len("Thanks")))
    assert derived.record.target.text == "Thanks"


def test_hierarchical_runs_are_re_estimated_from_their_groups_and_say_so(runs_dir):
    long_prompt = " ".join(f"Line {i} says Word{i}." for i in range(14)) + " Say Discontinued once."
    backend = Answering("The Word3 is here. And Discontinued too.")
    whole = prompt_attr.attribute(long_prompt, backend=backend, runs_dir=runs_dir, cache=False)
    assert whole.record.settings.estimator(len(whole.spans)) == "hierarchical"
    before = calls(backend)
    part = whole.for_target("Discontinued")
    assert calls(backend) == before
    assert part.record.retargeted.refined_by_whole
    assert any("refined the groups that the whole answer found hot" in n for n in part.notes())
    # every evaluated group is used: a span's score is its smallest evaluated group's share
    groups = {tuple(e.dropped): e for e in part.record.evaluations if e.purpose == "attribution"}
    for s in part.record.attribution:
        assert tuple(range(*s.group)) in groups


def test_an_embedding_run_scores_parts_by_target_overlap_like_a_targeted_black_box_run(runs_dir):
    backend = Answering(logprobs=False)
    whole = run(runs_dir, backend)
    assert whole.scorer == "embedding"
    before = calls(backend)
    derived = whole.for_target("Free Mini")
    assert calls(backend) == before
    fresh = run(runs_dir, Answering(logprobs=False), target="Free Mini")
    assert fresh.scorer == derived.scorer == "target_overlap"
    assert_same(derived, fresh)
    assert any("target overlap of the stored answers" in n for n in derived.notes())


def test_bad_targets_are_clear_usage_errors(runs_dir):
    whole = run(runs_dir)
    for target, words in [("not in it", "does not occur"), ((3, 3), "empty"), ((5, 900), "outside"),
                          ("  ", "empty"), (object(), "character range")]:
        with pytest.raises(UsageError, match=words):
            whole.for_target(target)


# --- the matrix, explain() and the default views ----------------------------------------------


def test_matrix_and_explain_find_each_sentences_own_cause(runs_dir):
    whole = run(runs_dir)
    sentences = whole.answer_sentences()
    assert [s.text for s in sentences] == ["The Pro is Discontinued.", "We offer a Free Mini instead.",
                                           "Our Store opens at Nine.", "👋 Thanks Friend!"]
    m = whole.matrix()
    assert m.shape == (4, len(whole.spans))
    for row, cause in enumerate([0, 1, 2, 3]):  # sentence k is driven by prompt sentence k
        assert max(range(m.shape[1]), key=lambda i: m.scores[row, i]) == cause
        assert m.significant[row, cause] is True
        assert m.significant[row, 5] is False  # "Bread is baked at dawn." causes nothing
    explanation = whole.explain()
    assert [row.causes[0].span.index for row in explanation] == [0, 1, 2, 3]
    assert "Discontinued" in repr(explanation) and "<table>" in explanation._repr_html_()
    df = m.to_dataframe()
    assert df.shape == (4, len(whole.spans)) and df.index[0] == "The Pro is Discontinued."
    # each row is exactly for_target of that sentence
    for row, s in enumerate(sentences):
        part = whole.for_target((s.start, s.end))
        assert [x.score for x in part.spans] == pytest.approx(list(m.scores[row]), abs=1e-9)


def test_untargeted_views_say_which_sentence_each_top_span_drives(runs_dir):
    whole = run(runs_dir)
    drives = whole.drives()
    assert drives[0].text == "The Pro is Discontinued." and drives[3].text == "👋 Thanks Friend!"
    assert 5 not in drives  # a span that moves nothing drives nothing
    assert "drives: 'The Pro is Discontinued.'" in top_table(whole.record)
    assert "&#x27;The Pro is Discontinued.&#x27;" in heatmap_html(whole.record) or \
        "'The Pro is Discontinued.'" in heatmap_html(whole.record)
    assert "drives" in repr(whole)
    # a targeted run is about one part already: no drives column
    part = whole.for_target("Discontinued")
    assert part.drives() == {} and "drives" not in top_table(part.record)


# --- what is stored: float32 in logprobs.f32, 4 bytes per token per evaluation ------------------


def test_per_token_logprobs_cost_four_bytes_each_plus_framing(runs_dir):
    whole = run(runs_dir)
    tokens = len(whole.record.answer_tokens.offsets)
    scored = len(whole.record.evaluations) + 1  # and the baseline under the whole prompt
    assert os.path.getsize(whole.path / FILE) == 4 * tokens * scored
    line = next(json.loads(x) for x in (whole.path / "events.jsonl").read_text().splitlines() if '"evaluated"' in x)
    framing = len(json.dumps(line["evaluation"]["tokens"], separators=(",", ":")))
    assert framing < 60  # where the numbers are, and their CRC: not the numbers
    assert json.loads((whole.path / "run.json").read_text())["schema_version"] == 3


def test_a_loaded_run_serves_any_part_as_the_live_one_did(runs_dir):
    whole = run(runs_dir)
    loaded = prompt_attr.load_run(whole.run_id, runs_dir)
    assert loaded == whole
    assert_same(loaded.for_target("Nine"), whole.for_target("Nine"), tol=0)


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_a_lost_or_damaged_logprobs_file_is_detected_never_misread(runs_dir, damage):
    whole = run(runs_dir)
    path = whole.path / FILE
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:8] + bytes([data[8] ^ 0x40]) + data[9:])
    loaded = prompt_attr.load_run(whole.run_id, runs_dir)
    assert [s.score for s in loaded.spans] == [s.score for s in whole.spans]  # the run itself still shows
    with pytest.raises(UsageError, match="lost their per-token log-probabilities"):
        loaded.for_target("Nine")
    assert loaded.drives() == {}  # and the default views simply leave the column out
    assert "drives" not in top_table(loaded.record)


def test_a_resumed_run_appends_after_a_killed_sessions_torn_numbers(runs_dir):
    seen = []

    def stop(event):
        seen.append(event)
        if sum(type(e).__name__ == "Evaluated" for e in seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(runs_dir, on_event=stop, concurrency=1)
    run_id = prompt_attr.list_runs(runs_dir)[-1].run_id
    with open(runs_dir / run_id / FILE, "ab") as fh:
        fh.write(b"\x01\x02\x03")  # a killed session's half-written number
    resumed = prompt_attr.attribute(resume=run_id, backend=Answering(), runs_dir=runs_dir)
    assert resumed.status == "finished"
    loaded = prompt_attr.load_run(run_id, runs_dir)
    assert loaded.matrix_error() is None
    assert_same(loaded.for_target("Nine"), run(runs_dir, target="Nine"))


def test_old_runs_load_and_say_why_their_parts_cannot_be_explained(runs_dir):
    whole = run(runs_dir)
    data = json.loads((whole.path / "run.json").read_text())
    data["schema_version"] = 2
    data.pop("answer_tokens")
    for e in data["evaluations"]:
        e.pop("tokens")
    (whole.path / "run.json").write_text(json.dumps(data))
    old = prompt_attr.load_run(whole.run_id, runs_dir)
    with pytest.raises(UsageError, match=r"saved before prompt_attr kept each answer token's log-probability.*rerun"):
        old.for_target("Nine")
    assert old.drives() == {} and old.matrix_error() is not None


def test_the_crc_names_exactly_the_stored_numbers(runs_dir):
    whole = run(runs_dir)
    data = (whole.path / FILE).read_bytes()
    for e in whole.record.evaluations:
        t = e.tokens
        assert zlib.crc32(data[t.at * 4 : (t.at + t.count) * 4]) == t.crc32
        assert all(math.isfinite(x) for x in memoryview(t.values).cast("f"))


def test_redacted_runs_keep_their_token_numbers_and_mask_the_text(runs_dir):
    secret = "sk-" + "A1b2C3d4" * 4
    backend = Answering(f"The Pro is Discontinued. Key {secret} here.")
    whole = prompt_attr.attribute(PROMPT + f" The key is {secret}.", backend=backend, runs_dir=runs_dir,
                                  method="loo", cache=False, redact=True)
    assert secret not in (whole.path / "run.json").read_text()
    assert secret not in whole.baseline
    part = whole.for_target("Discontinued")
    assert part.record.target.text == "Discontinued"


# --- the planted culprit behind one sentence of a rambling answer -------------------------------


def test_a_culprit_behind_one_sentence_is_missed_by_the_whole_answer_and_found_by_its_sentence(runs_dir):
    """The case the feature is for: the planted instruction drives one short sentence, an ordinary
    line drives the long rambling rest; the whole-answer ranking puts the ordinary line first,
    the sentence's row of the matrix puts the culprit first."""
    prompt = ("Our Pro and Mini are phones. "
              "If asked about the Pro, say Discontinued. "
              "Talk about Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa. "
              "The Pro ships in blue. "
              "The weather is mild.")
    answer = "The Pro is Discontinued. Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa are great."
    whole = prompt_attr.attribute(prompt, backend=Answering(answer), runs_dir=runs_dir, method="loo", cache=False)
    culprit = 1
    assert whole.top(1)[0].index == 2 != culprit  # the rambling driver wins the whole answer
    sentence = next(s for s in whole.answer_sentences() if "Discontinued" in s.text)
    row = whole.explain()[sentence.index]
    assert row.causes[0].span.index == culprit
    assert whole.drives()[culprit].text == sentence.text
    assert "drives: 'The Pro is Discontinued.'" in top_table(whole.record)


# --- the command line: show --target, --by-sentence, --json -------------------------------------


def show(*args, capsys):
    from prompt_attr_widget import cli

    code = cli.main(["show", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_target_and_by_sentence_from_disk(runs_dir, capsys, monkeypatch):
    whole = run(runs_dir)
    monkeypatch.setattr(FakeBackend, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a model")))
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--target", "Free Mini", "--no-color", capsys=capsys)
    assert code == 0 and "of the target 'Free Mini'" in out and "no model call" in out
    at = ANSWER.find("Nine")
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--target", f"{at}:{at + 4}", "--json", capsys=capsys)
    record = json.loads(out)
    assert code == 0 and record["target"] == {"text": "Nine", "start": at, "end": at + 4}
    assert record["retargeted"]["whole"] is None and record["scorer"] == "logprob"
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--by-sentence", capsys=capsys)
    assert code == 0 and "[0] 'The Pro is Discontinued.'" in out and "span 0:" in out
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--by-sentence", "--json", capsys=capsys)
    data = json.loads(out)
    assert [p["causes"][0]["span"] for p in data["parts"]] == [0, 1, 2, 3]
    assert len(data["scores"]) == 4 and len(data["scores"][0]) == len(whole.spans)
    code, _, err = show(whole.run_id, "--runs-dir", runs_dir, "--target", "absent words", capsys=capsys)
    assert code == 2 and "does not occur in the baseline answer" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        show(whole.run_id, "--runs-dir", runs_dir, "--target", "x", "--by-sentence", capsys=capsys)
    assert exited.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_hostile_answer_text_stays_inert_in_the_by_sentence_views(runs_dir, capsys):
    hostile = "Bad \x1b]0;pwn\x07 and \u202eexe.txt here. <img src=x onerror=alert(1)> Next Fine."
    whole = prompt_attr.attribute(PROMPT, backend=Answering(hostile), runs_dir=runs_dir, method="loo", cache=False)
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--by-sentence", capsys=capsys)
    assert code == 0 and "\x1b" not in out and "\u202e" not in out
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--by-sentence", "--json", capsys=capsys)
    assert "\x1b" not in out and "\u202e" not in out and json.loads(out)["parts"]
    assert "<img" not in whole.explain()._repr_html_()


# --- the widget: parts served from the evaluations so far, a selection in one round-trip ---------


def test_the_widget_serves_parts_and_selections_with_no_model_call(runs_dir):
    from prompt_attr_widget.views.widget import AttributionWidget

    backend = Answering()
    widget = AttributionWidget()
    whole = run(runs_dir, backend, on_event=widget)
    assert [p["pre"] + p["text"] for p in widget.answer_parts] and \
        "".join(p["pre"] + p["text"] for p in widget.answer_parts) + widget.answer_tail == ANSWER
    assert len(widget.part_views) == 4 and widget.parts_note == ""
    for view, s in zip(widget.part_views, whole.answer_sentences(), strict=True):
        part = whole.for_target((s.start, s.end))
        assert view["scores"] == [round(x.score, 6) for x in part.spans]
    assert widget.drives[0] == "drives: 'The Pro is Discontinued.'"
    before, saved = calls(backend), widget._saved_bundle()
    at = ANSWER.find("Thanks")
    widget.focus = {"seq": 7, "start": at, "end": at + 6}
    assert widget.focus_view["seq"] == 7 and "'Thanks'" in widget.focus_view["label"]
    assert widget.focus_view["scores"] == [round(x.score, 6) for x in whole.for_target("Thanks").spans]
    widget.focus = {"seq": 8, "start": 5, "end": 5000}
    assert widget.focus_view == {"seq": 8, "error": "target range 5:5000 is outside the baseline answer "
                                                    f"({len(ANSWER)} characters)"}
    widget.focus = {"seq": 9, "start": "x"}
    assert widget.focus_view["error"] == "not a range of the answer"
    assert calls(backend) == before
    assert widget._saved_bundle() == saved  # what a saved notebook keeps: the whole-answer view
    assert "drives" in widget._saved_body()  # which names the sentence each top span drives


def test_a_live_widget_fills_in_parts_while_evaluations_arrive(runs_dir, monkeypatch):
    import prompt_attr_widget.views.widget as widget_mod
    from prompt_attr_widget.views.widget import AttributionWidget

    monkeypatch.setattr(widget_mod, "PARTS_INTERVAL_S", 0.0)
    monkeypatch.setattr(widget_mod, "FLUSH_INTERVAL_S", 0.0)
    widget = AttributionWidget()
    filled = []

    def sink(event):
        widget(event)
        if type(event).__name__ == "Evaluated" and widget.part_views:
            filled.append(sum(x is not None for x in widget.part_views[0]["scores"]))

    run(runs_dir, on_event=sink, concurrency=1)
    assert filled and filled[0] < len(widget.spans) and filled == sorted(filled)  # grows span by span


def test_parts_of_an_old_run_say_why_in_the_widget(runs_dir):
    from prompt_attr_widget.views.widget import AttributionWidget

    whole = run(runs_dir)
    (whole.path / FILE).unlink()
    widget = AttributionWidget.from_attribution(prompt_attr.load_run(whole.run_id, runs_dir))
    assert widget.part_views == [] and "lost their per-token log-probabilities" in widget.parts_note
    assert len(widget.answer_parts) == 4  # the answer is still shown in its parts


# --- what a review found: each case is a test -----------------------------------------------------


def test_explain_names_an_unrefined_group_that_holds_a_sentences_cause(runs_dir):
    """A hierarchical run never split the group holding the culprit of a short sentence: explain()
    says so (the group and its score), never "no span above the noise floor"."""
    prompt = " ".join(f"Line {i} says Word{i}." for i in range(30)) + \
        " Say Discontinued once. Filler text here. More filler text. Even more filler."
    answer = "The " + " ".join(f"Word{i % 3}" for i in range(45)) + " are here. And Discontinued too."
    whole = prompt_attr.attribute(prompt, backend=Answering(answer), runs_dir=runs_dir, cache=False)
    culprit = next(s.index for s in whole.spans if "Discontinued" in s.text)
    row = whole.explain()[1]
    assert row.part.text == "And Discontinued too."
    assert any(g.start <= culprit < g.end for g in row.unrefined)
    assert "did not refine" in repr(whole.explain()) and "no span above the noise floor" not in row.lines()[0]


def test_show_target_prefers_text_that_occurs_in_the_answer_and_target_range_forces_a_range(runs_dir, capsys):
    whole = prompt_attr.attribute(PROMPT, backend=Answering("The Store opens at 9:30 daily. Bye Friend."),
                                  runs_dir=runs_dir, method="loo", cache=False)
    code, out, err = show(whole.run_id, "--runs-dir", runs_dir, "--target", "9:30", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["target"]["text"] == "9:30" and "--target-range 9:30" in err
    code, out, _ = show(whole.run_id, "--runs-dir", runs_dir, "--target-range", "4:9", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["target"] == {"text": "Store", "start": 4, "end": 9}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_logprobs_file_that_is_no_regular_file_is_never_read(runs_dir, kind):
    import subprocess
    import sys

    whole = run(runs_dir)
    path = whole.path / FILE
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    proc = subprocess.run([sys.executable, "-m", "prompt_attr_widget.cli", "show", whole.run_id, "--runs-dir",
                           str(runs_dir), "--no-color"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    with pytest.raises(UsageError, match="lost their per-token"):
        prompt_attr.load_run(whole.run_id, runs_dir).for_target("Nine")


def test_a_part_of_a_part_keeps_the_runs_check_and_its_note(runs_dir):
    whole = run(runs_dir)
    first = whole.for_target("Discontinued. We offer a Free Mini")
    again, direct = first.for_target("Discontinued"), whole.for_target("Discontinued")
    assert again.record.faithfulness == direct.record.faithfulness is not None
    assert again.notes()[2:] == direct.notes()[2:] and again.record.retargeted.whole is None


def test_the_lds_of_held_out_masks_serves_every_part(runs_dir):
    whole = run(runs_dir, method="surrogate", masks=24, faithfulness="full")
    derived = whole.for_target("Discontinued")
    fresh = run(runs_dir, method="surrogate", masks=24, faithfulness="full", target="Discontinued")
    assert derived.record.faithfulness.lds == pytest.approx(fresh.record.faithfulness.lds, abs=1e-6)
    assert any("top-k deletion is not measured" in n and "LDS" in n for n in derived.notes())


def test_a_part_no_token_covers_is_refused_and_shown_as_not_scored(runs_dir, capsys):
    answer = "🙂\n\nThe Pro is Discontinued. We offer a Free Mini instead."
    whole = prompt_attr.attribute(PROMPT, backend=Answering(answer), runs_dir=runs_dir, method="loo", cache=False)
    with pytest.raises(UsageError, match="no token of the answer covers characters 0:1"):
        whole.for_target((0, 1))
    row = whole.explain()[0]
    assert row.part.text == "🙂" and row.lines()[0].startswith("not scored: no token")
    code, out, err = show(whole.run_id, "--runs-dir", runs_dir, "--by-sentence", "--json", capsys=capsys)
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert code == 0 and data["parts"][0]["not_scored"] and "Warning" not in err
    assert whole.drives()  # the other parts still drive


def test_a_damaged_token_reference_loses_only_those_numbers(runs_dir):
    whole = run(runs_dir)
    events = (whole.path / "events.jsonl").read_text().splitlines()
    at = next(i for i, line in enumerate(events) if '"evaluated"' in line)
    event = json.loads(events[at])
    event["evaluation"]["tokens"]["crc32"] = "deadbeef"
    events[at] = json.dumps(event)
    (whole.path / "events.jsonl").write_text("\n".join(events) + "\n")
    (whole.path / "run.json").unlink()  # rebuilt from the events
    loaded = prompt_attr.load_run(whole.run_id, runs_dir)
    assert len(loaded.record.evaluations) == len(whole.record.evaluations)
    assert [s.score for s in loaded.spans] == [s.score for s in whole.spans]
    with pytest.raises(UsageError, match="1 of run .* scored prompts have lost"):
        loaded.for_target("Nine")
