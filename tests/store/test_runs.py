"""The run store: ids, safe lookup, run.json and events.jsonl, replay, listing, loading."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import prompt_attr
from prompt_attr import PromptAttrError, RunNotFound, UsageError
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.events import Evaluated, RunStarted
from prompt_attr_widget.store.runs import (
    RUN_ID,
    atomic_write_json,
    list_runs,
    new_run_id,
    read_run,
    resolve_run_dir,
    run_ids,
)

PROMPT = "It was late. The Blue Falcon landed safely. It rained all day. My cat slept."


def run(runs_dir, prompt=PROMPT, **kw):
    kw.setdefault("backend", FakeBackend())
    return prompt_attr.attribute(prompt, runs_dir=runs_dir, **kw)


def events_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "events.jsonl").read_text("utf-8").splitlines()]


# --- ids -----------------------------------------------------------------------------


def test_run_id_format():
    when = datetime(2026, 11, 23, 10, 15, 0, 123456, tzinfo=timezone.utc)
    rid = new_run_id(when)
    assert RUN_ID.match(rid)
    assert rid.startswith("20261123T101500123Z-")
    assert len(rid) == len("20261123T101500123Z-") + 8
    assert RUN_ID.match(new_run_id())


def test_run_ids_sort_by_time_and_are_unique():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    times = [start + timedelta(milliseconds=7 * i, days=i % 3) for i in range(1000)]
    ids = [new_run_id(t) for t in times]
    assert len(set(ids)) == 1000
    assert sorted(ids) == [new for _, new in sorted(zip(times, ids, strict=True))]
    same_ms = {new_run_id(start) for _ in range(1000)}
    assert len(same_ms) == 1000  # the random part keeps ids unique within one millisecond


@pytest.mark.parametrize(
    "bad",
    ["../x", "/etc", "a/b", "..", "", ".", "x" * 31, "2" * 31, "2" * 5000, "abc", "../../etc/passwd", "2026\n",
     "20261123T101500123Z-1a2b3c4d\n", "2026\\x", "LATEST", "latest/..", None, 12345],
)
def test_resolve_rejects_anything_but_an_id(bad, runs_dir):
    with pytest.raises(UsageError, match="not a run id"):
        resolve_run_dir(bad, runs_dir)


def test_resolve_full_id_prefix_and_latest(runs_dir):
    first = run(runs_dir)
    time.sleep(0.003)  # ids are ordered to the millisecond
    second = run(runs_dir)
    assert first.run_id < second.run_id
    assert resolve_run_dir(first.run_id, runs_dir) == runs_dir / first.run_id
    assert resolve_run_dir("latest", runs_dir) == runs_dir / second.run_id
    unique = next(
        first.run_id[:k] for k in range(4, len(first.run_id)) if not second.run_id.startswith(first.run_id[:k])
    )
    assert resolve_run_dir(unique, runs_dir) == runs_dir / first.run_id
    common = os.path.commonprefix([first.run_id, second.run_id])
    with pytest.raises(RunNotFound, match="2 runs"):
        resolve_run_dir(common[:8], runs_dir)
    with pytest.raises(RunNotFound):
        resolve_run_dir("20001231T000000000Z-00000000", runs_dir)
    with pytest.raises(RunNotFound, match="no run"):
        resolve_run_dir("1999", runs_dir)


def test_latest_in_an_empty_or_missing_folder(tmp_path):
    with pytest.raises(RunNotFound):
        resolve_run_dir("latest", tmp_path / "nowhere")
    with pytest.raises(RunNotFound):
        prompt_attr.load_run("latest", runs_dir=tmp_path / "nowhere")
    assert prompt_attr.list_runs(tmp_path / "nowhere") == []


def test_run_ids_ignore_foreign_entries(runs_dir):
    a = run(runs_dir)
    (runs_dir / "notes").mkdir()
    (runs_dir / "20261123T101500123Z-zzzzzzzz").mkdir()
    (runs_dir / "20261123T101500123Z-0000000a").write_text("a file, not a run")
    assert run_ids(runs_dir) == [a.run_id]


# --- files on disk --------------------------------------------------------------------------


def test_run_json_is_written_at_start_and_at_the_end(runs_dir):
    seen = {}

    def sink(event):
        if isinstance(event, RunStarted):
            path = runs_dir / event.record.run_id / "run.json"
            seen["start"] = json.loads(path.read_text("utf-8"))

    a = run(runs_dir, on_event=sink)
    assert seen["start"]["status"] == "running" and seen["start"]["evaluations"] == []
    final = json.loads((a.path / "run.json").read_text("utf-8"))
    assert final["status"] == "finished"
    assert len(final["evaluations"]) == len(a.record.evaluations) > 0
    assert sorted(p.name for p in a.path.iterdir()) == ["events.jsonl", "run.json", "summary.json"]  # no temp files left


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    atomic_write_json(target, '{"v": 1}')
    assert json.loads(target.read_text()) == {"v": 1}

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_json(target, '{"v": 2}')
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_events_jsonl(runs_dir):
    a = run(runs_dir)
    events = events_of(a.path)
    types = [e["type"] for e in events]
    # the baseline's request is reserved before it is sent and its cost stored before its answer
    # (and its embedding's, which the baseline's event waits for)
    first = types.index("baseline")
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types[1:first] == ["call_reserved", "call_settled"] * ((first - 1) // 2) and first >= 3
    assert {"run_started", "baseline", "evaluated", "estimate", "run_finished"} <= set(types)
    assert "progress" not in types  # derivable, not stored
    assert types.count("evaluated") == len(a.record.evaluations)
    assert [e["evaluation"]["id"] for e in events if e["type"] == "evaluated"] == list(range(len(a.record.evaluations)))
    assert types.index("estimate") > types.index("evaluated")


def test_a_run_left_running_is_rebuilt_from_its_events(runs_dir):
    a = run(runs_dir)
    lines = (a.path / "events.jsonl").read_text("utf-8").splitlines()
    assert json.loads(lines[-1])["type"] == "run_finished"
    # simulate a crash: the terminal event never made it, run.json still says "running"
    (a.path / "events.jsonl").write_text("\n".join(lines[:-1]) + "\n", "utf-8")
    crashed = json.loads((a.path / "run.json").read_text("utf-8"))
    crashed.update(status="running", evaluations=[], attribution=[], baseline=None)
    (a.path / "run.json").write_text(json.dumps(crashed), "utf-8")

    record = read_run(a.run_id, runs_dir)
    assert record.status == "aborted"
    assert "rebuilt" in record.reason
    assert record.evaluations == a.record.evaluations
    assert record.baseline == a.record.baseline
    assert record.attribution == a.record.attribution
    assert prompt_attr.load_run(a.run_id, runs_dir=runs_dir).status == "aborted"


def test_a_torn_last_line_is_skipped(runs_dir):
    a = run(runs_dir)
    lines = (a.path / "events.jsonl").read_text("utf-8").splitlines()
    kept = lines[:-2]  # drop the last estimate and the terminal event
    torn = lines[-2][: len(lines[-2]) // 2]
    (a.path / "events.jsonl").write_text("\n".join([*kept, torn]), "utf-8")
    (a.path / "run.json").unlink()
    record = read_run(a.run_id, runs_dir)
    assert record.status == "aborted"
    assert len(record.evaluations) == len(a.record.evaluations)


def test_a_missing_run_json_is_rebuilt_from_complete_events(runs_dir):
    a = run(runs_dir)
    (a.path / "run.json").unlink()
    record = read_run(a.run_id, runs_dir)
    assert record.status == "finished"
    assert record.evaluations == a.record.evaluations
    assert record.spend == a.record.spend


CORRUPT_RUN_JSON = [b"{not json", b"", b'{"run_id": 3}', b"\xff\xfe\x00garbage", b"[]"]


@pytest.mark.parametrize("content", CORRUPT_RUN_JSON)
def test_a_run_json_that_does_not_validate_is_rebuilt_from_the_events(runs_dir, content):
    a = run(runs_dir)
    (a.path / "run.json").write_bytes(content)
    rebuilt = prompt_attr.load_run(a.run_id, runs_dir=runs_dir).record
    assert rebuilt.status == "finished" and rebuilt.evaluations == a.record.evaluations
    assert rebuilt.attribution == a.record.attribution and rebuilt.spend == a.record.spend
    assert [s.status for s in prompt_attr.list_runs(runs_dir)] == ["finished"]


@pytest.mark.parametrize("content", CORRUPT_RUN_JSON)
def test_a_corrupted_run_json_without_events_is_an_error_not_a_crash(runs_dir, content):
    a = run(runs_dir)
    (a.path / "run.json").write_bytes(content)
    (a.path / "events.jsonl").write_bytes(b'{"type": "run_sta')  # torn: nothing to rebuild from
    with pytest.raises(PromptAttrError, match="corrupted .*run.json.*prompt-attr delete") as info:
        prompt_attr.load_run(a.run_id, runs_dir=runs_dir)
    assert "\n" not in str(info.value)
    summary = prompt_attr.list_runs(runs_dir)
    assert [s.status for s in summary] == ["corrupt"]


def stopped_run(runs_dir, after: int = 4):
    """A run of the fake model stopped by an interrupt after a few events: aborted, resumable."""
    seen = []

    def stop(event):
        seen.append(event)
        if len(seen) == after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prompt_attr.attribute(PROMPT, model="fake", runs_dir=runs_dir, method="loo", faithfulness="off", on_event=stop)
    [run_id] = run_ids(runs_dir)
    return read_run(run_id, runs_dir)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.0])
def test_a_truncated_run_json_of_a_stopped_run_is_rebuilt_and_resumes(runs_dir, cut):
    stopped = stopped_run(runs_dir)
    assert stopped.status == "aborted" and stopped.evaluations
    run_json = runs_dir / stopped.run_id / "run.json"
    data = run_json.read_bytes()
    run_json.write_bytes(data[: int(len(data) * cut)])  # a disk that filled, a copy cut short
    rebuilt = read_run(stopped.run_id, runs_dir)
    assert rebuilt.status == "aborted" and rebuilt.evaluations == stopped.evaluations
    assert [s.status for s in prompt_attr.list_runs(runs_dir)] == ["aborted"]
    backend = FakeBackend()
    done = prompt_attr.attribute(resume=stopped.run_id, backend=backend, runs_dir=runs_dir)
    assert done.status == "finished" and done.run_id == stopped.run_id
    # the stored answers (spans and the 8 placebos) not asked again
    assert backend.calls == len(PROMPT.split(". ")) + 8 - len(stopped.evaluations)
    assert json.loads(run_json.read_bytes())["status"] == "finished"  # run.json is whole again


def test_a_run_folder_with_nothing_in_it(runs_dir):
    a = run(runs_dir)
    for name in ("run.json", "events.jsonl", "summary.json"):
        (a.path / name).unlink()
    with pytest.raises(RunNotFound, match="is empty.*prompt-attr delete"):
        prompt_attr.load_run(a.run_id, runs_dir=runs_dir)
    assert [s.status for s in prompt_attr.list_runs(runs_dir)] == ["empty"]


def test_an_unwritable_runs_folder_is_a_clear_error(tmp_path):
    # Regression: failing to create the run folder surfaced as an AttributeError
    # from closing a run that was never opened.
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(PromptAttrError, match="cannot write the run"):
        run(not_a_folder)


# --- listing and loading --------------------------------------------------------------------------


def test_list_runs(runs_dir):
    a = run(runs_dir)
    time.sleep(0.003)
    b = run(runs_dir, prompt="It is quiet. Zebra Crossing Ahead.", method="loo")
    summaries = list_runs(runs_dir)
    assert [s.run_id for s in summaries] == [a.run_id, b.run_id]
    sa, sb = summaries
    assert sa.status == sb.status == "finished"
    assert sa.model == "fake" and sa.spans == len(a.spans) and sa.evaluations == len(a.record.evaluations)
    assert sa.top_span == "The Blue Falcon landed safely."
    assert sb.top_span == "Zebra Crossing Ahead."
    assert sa.spend_usd == 0.0
    assert prompt_attr.list_runs(runs_dir) == summaries


def test_load_run_equals_the_live_result(runs_dir):
    backend = FakeBackend()
    live = run(runs_dir, backend=backend)
    calls = backend.calls
    for ref in (live.run_id, live.run_id[:12], "latest"):
        loaded = prompt_attr.load_run(ref, runs_dir=runs_dir)
        assert loaded == live
        assert loaded.spans == live.spans
        assert loaded.to_json() == live.to_json()
        assert loaded._repr_html_() == live._repr_html_()
        assert repr(loaded) == repr(live)
    assert backend.calls == calls  # loading never calls the model


def test_loaded_run_keeps_a_fingerprint_learnt_during_the_run(runs_dir):
    # Regression: a fingerprint the backend learnt from answers (as OpenAI's
    # system_fingerprint is) reached the live result only, never run.json.
    class Learning(FakeBackend):
        async def complete(self, messages, params):
            self.info.fingerprint["system_fingerprint"] = "fp_123"
            return await super().complete(messages, params)

    live = run(runs_dir, backend=Learning())
    assert live.record.backend.fingerprint["system_fingerprint"] == "fp_123"
    on_disk = json.loads((live.path / "run.json").read_text("utf-8"))
    assert on_disk["backend"]["fingerprint"]["system_fingerprint"] == "fp_123"
    assert prompt_attr.load_run(live.run_id, runs_dir=runs_dir) == live


def test_runs_dir_comes_from_the_environment(runs_dir, monkeypatch):
    a = prompt_attr.attribute(PROMPT, backend=FakeBackend())
    assert (runs_dir / a.run_id / "run.json").is_file()  # conftest points PROMPT_ATTR_RUNS_DIR here
    assert prompt_attr.load_run("latest") == a


@pytest.mark.parametrize("logprobs", [False, True])
def test_the_spend_recorded_for_a_stopped_run_is_the_live_tally(runs_dir, logprobs, monkeypatch):
    """Stopped runs get their spend from the live run: it must count what the live tally counts."""
    from prompt_attr_widget import api

    streams = []

    class Kept(api.RunStream):  # the run behind the stream, kept to read its live tally afterwards
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            streams.append(self)

    monkeypatch.setattr(api, "RunStream", Kept)
    backend = FakeBackend(logprobs=logprobs, price=prompt_attr.Price(input=1000, output=1000),
                          embed_price=prompt_attr.Price(input=100))
    evaluated = []

    def stop_after_three(event):
        evaluated.extend([event] if isinstance(event, Evaluated) else [])
        if len(evaluated) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(runs_dir, backend=backend, cache=False, method="loo", on_event=stop_after_three)
    [run_id] = run_ids(runs_dir)
    recorded = read_run(run_id, runs_dir).spend
    live = streams[0].run.spend()
    assert read_run(run_id, runs_dir).status == "aborted"
    assert recorded.calls == live.calls == backend.calls + backend.embed_calls + backend.logprob_calls
    assert recorded.usd == pytest.approx(live.usd) and recorded.prompt_tokens <= live.prompt_tokens
