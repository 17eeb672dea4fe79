"""Run folders written by prompt_attr 0.1.0 before the package was layered still load.

tests/data/runs-0.1.0 was written by the flat-module version (commit
c89a800) with the fake backend: a finished leave-one-out run, a finished
surrogate run of an edited prompt, a run interrupted by Ctrl-C after two
answers, and a run killed (os._exit, as SIGKILL) after two answers.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import pytest

import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli

OLD = Path(__file__).resolve().parents[1] / "data" / "runs-0.1.0"
FINISHED, SURROGATE, INTERRUPTED, KILLED = sorted(p.name for p in OLD.iterdir())


@pytest.fixture
def old_runs(tmp_path) -> Path:
    folder = tmp_path / "runs"
    shutil.copytree(OLD, folder)
    return folder


def test_every_old_run_lists_and_loads(old_runs):
    summaries = {s.run_id: s for s in prompt_attr.list_runs(old_runs)}
    assert {k: s.status for k, s in summaries.items()} == {
        FINISHED: "finished", SURROGATE: "finished", INTERRUPTED: "aborted", KILLED: "aborted",
    }
    assert summaries[FINISHED].label == "before-the-move"
    for run_id in summaries:
        result = prompt_attr.load_run(run_id, old_runs)
        page = result._repr_html_()
        assert all(html.escape(span.text, quote=False) in page for span in result.record.spans)
        assert "<b>Answer" not in page
        assert str(result)


def test_a_killed_old_run_is_rebuilt_from_its_events(old_runs):
    record = prompt_attr.load_run(KILLED, old_runs).record
    assert record.status == "aborted" and "rebuilt from events.jsonl" in record.reason
    assert len([e for e in record.evaluations if e.purpose == "attribution"]) >= 1


def test_old_runs_show_and_compare_from_the_cli(old_runs, capsys):
    assert cli(["show", FINISHED, "--runs-dir", str(old_runs), "--no-color"]) == 0
    assert "before-the-move" not in capsys.readouterr().err
    assert cli(["compare", FINISHED, SURROGATE, "--runs-dir", str(old_runs)]) == 0
    out = capsys.readouterr().out
    assert "prompts differ" in out and "Spanish" in out


def test_an_interrupted_old_run_resumes_to_the_finished_runs_attribution(old_runs):
    resumed = prompt_attr.attribute(resume=INTERRUPTED, backend=FakeBackend(), runs_dir=old_runs)
    finished = prompt_attr.load_run(FINISHED, old_runs)
    assert resumed.status == "finished" and resumed.run_id == INTERRUPTED
    assert [(s.index, round(s.score, 9)) for s in resumed.record.attribution] == [
        (s.index, round(s.score, 9)) for s in finished.record.attribution
    ]
