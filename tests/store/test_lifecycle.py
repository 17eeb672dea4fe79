"""Labels, tags, ls filters, archive/restore/delete and the retention policy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli
from prompt_attr_widget.store import lifecycle
from prompt_attr_widget.store.runs import run_ids

V1 = "It was late. The Blue Falcon landed safely. My cat slept."
V2 = "It was late. The Red Falcon landed safely. My cat slept."


def run(runs_dir, prompt=V1, **options):
    return prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=runs_dir, method="loo", **options)


def ids(runs):
    return [r.run_id for r in runs]


def test_runs_of_one_prompt_group_by_hash_and_filter_by_label_tag_model_status(runs_dir):
    a = run(runs_dir, label="v1", tags=["baseline"])
    b = run(runs_dir, label="v1.1", cache=False)
    c = run(runs_dir, V2, label="v2", tags=["experimental"])
    assert a.record.prompt_sha256 == b.record.prompt_sha256 != c.record.prompt_sha256
    assert ids(prompt_attr.list_runs(runs_dir, prompt=a.record.prompt_sha256[:10])) == [a.run_id, b.run_id]
    assert ids(prompt_attr.list_runs(runs_dir, label="v2")) == [c.run_id]
    assert ids(prompt_attr.list_runs(runs_dir, tag="baseline")) == [a.run_id]
    assert ids(prompt_attr.list_runs(runs_dir, model="fake", status="finished")) == [a.run_id, b.run_id, c.run_id]
    assert prompt_attr.list_runs(runs_dir, model="gpt-4o") == []
    with pytest.raises(UsageError, match="baseline or experimental"):
        run(runs_dir, tags=["archived"])


def test_tags_archive_restore_and_delete(runs_dir):
    a, b = run(runs_dir), run(runs_dir, V2)
    assert lifecycle.set_tags(a.run_id, runs_dir, add=("baseline",)) == ["baseline"]
    assert lifecycle.set_tags(a.run_id, runs_dir, add=("experimental",)) == ["experimental"]  # one or the other
    lifecycle.set_tags(a.run_id, runs_dir, add=("baseline",))
    assert lifecycle.archive(b.run_id, runs_dir) == ["archived"]
    assert prompt_attr.load_run(b.run_id, runs_dir=runs_dir).status == "finished"  # archived runs stay readable
    assert lifecycle.restore(b.run_id, runs_dir) == []
    with pytest.raises(UsageError, match="baseline"):
        lifecycle.delete(a.run_id, runs_dir)
    assert lifecycle.delete(a.run_id, runs_dir, force=True) == a.run_id
    assert lifecycle.delete(b.run_id, runs_dir) == b.run_id
    assert prompt_attr.list_runs(runs_dir) == []
    with pytest.raises(UsageError, match="unknown tag"):
        lifecycle.set_tags("latest", runs_dir, add=("gold",))


def test_a_damaged_tags_file_means_no_tags(runs_dir):
    a = run(runs_dir, tags=["baseline"])
    (a.path / "tags.json").write_text("{not json", "utf-8")
    assert prompt_attr.list_runs(runs_dir)[0].tags == []
    (a.path / "tags.json").write_text(json.dumps(["baseline", "<script>"]), "utf-8")
    assert prompt_attr.list_runs(runs_dir)[0].tags == ["baseline"]


def test_retention_keeps_baselines_and_the_last_n_per_prompt(runs_dir):
    base = run(runs_dir, tags=["baseline"])
    v1 = [run(runs_dir, cache=False) for _ in range(4)]
    v2 = [run(runs_dir, V2, cache=False) for _ in range(2)]
    plan = lifecycle.plan_retention(runs_dir, keep_last=2)
    assert plan.archive == ids(v1[:2])
    assert set(plan.keep) == {base.run_id, *ids(v1[2:]), *ids(v2)}
    assert plan.delete == []
    before = {r.run_id: r.tags for r in prompt_attr.list_runs(runs_dir)}
    lifecycle.apply_retention(plan, runs_dir)
    after = {r.run_id: r.tags for r in prompt_attr.list_runs(runs_dir)}
    assert {k for k, t in after.items() if "archived" in t} == set(ids(v1[:2]))
    assert before.keys() == after.keys()
    second = lifecycle.plan_retention(runs_dir, keep_last=2, delete_archived=True)
    assert set(second.delete) == set(ids(v1[:2])) and base.run_id in second.keep


def test_cli_label_tag_ls_filters_and_prune(runs_dir, capsys, tmp_path):
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text(V1, "utf-8")
    common = ["--model", "fake", "--runs-dir", str(runs_dir), "--method", "loo"]
    assert cli(["run", str(prompt_file), *common, "--label", "v1", "--tag", "baseline"]) == 0
    assert cli(["run", str(prompt_file), *common, "--label", "v1b", "--no-cache"]) == 0
    assert cli(["run", str(prompt_file), *common, "--label", "v1c", "--no-cache"]) == 0
    capsys.readouterr()
    runs = prompt_attr.list_runs(runs_dir)
    assert cli(["ls", "--runs-dir", str(runs_dir), "--label", "v1b"]) == 0
    out = capsys.readouterr().out
    assert runs[1].run_id in out and runs[0].run_id not in out
    assert cli(["prune", "--keep-last", "1", "--dry-run", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: keep 2, archive 1") and runs[1].run_id in out
    assert [r.tags for r in prompt_attr.list_runs(runs_dir)] == [["baseline"], [], []]  # nothing changed
    assert cli(["prune", "--keep-last", "1", "--runs-dir", str(runs_dir)]) == 0
    capsys.readouterr()
    assert cli(["ls", "--runs-dir", str(runs_dir)]) == 0
    assert runs[1].run_id not in capsys.readouterr().out  # archived: hidden
    assert cli(["ls", "--all", "--runs-dir", str(runs_dir)]) == 0
    assert runs[1].run_id in capsys.readouterr().out
    assert cli(["delete", runs[0].run_id, "--runs-dir", str(runs_dir)]) == 2
    assert "baseline" in capsys.readouterr().err
    assert cli(["tag", runs[0].run_id, "baseline", "--remove", "--runs-dir", str(runs_dir)]) == 0
    assert cli(["delete", runs[0].run_id, "--runs-dir", str(runs_dir)]) == 0
    assert cli(["restore", runs[1].run_id, "--runs-dir", str(runs_dir)]) == 0
    assert cli(["archive", "../x", "--runs-dir", str(runs_dir)]) == 2


# --- a run being written by another process ------------------------------------------------------

LIVE_CHILD = """
import sys
import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.events import Evaluated

backend, seen = FakeBackend(latency=0.005), []  # not instant: the parent acts between answers

def pause_once(event):
    if isinstance(event, Evaluated) and not seen:
        seen.append(event)
        print("LIVE", event.evaluation.id, flush=True)
        sys.stdin.readline()  # the run is live (its lock held) until the parent answers

try:
    a = prompt_attr.attribute(sys.argv[2], backend=backend, runs_dir=sys.argv[1], method="loo", cache=False,
                              concurrency=1, on_event=pause_once)
    print("DONE", a.status, a.run_id, len(a.record.evaluations), backend.calls, flush=True)
except prompt_attr.PromptAttrError as exc:
    print("ERROR", backend.calls, exc, flush=True)
"""


class LiveRun:
    """A real run in a second process, paused after its first evaluation with its lock held."""

    def __init__(self, runs_dir, prompt=V1):
        self.runs_dir = runs_dir
        self.proc = subprocess.Popen([sys.executable, "-c", LIVE_CHILD, str(runs_dir), prompt],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("LIVE"), line
        (self.run_id,) = run_ids(runs_dir)

    def finish(self) -> str:
        out, _ = self.proc.communicate("\n", timeout=120)
        return out.strip()


LONG = " ".join(f"Sentence {i} names Item{i}." for i in range(30))


@pytest.fixture
def live(runs_dir, request):
    runs_dir.mkdir(parents=True, exist_ok=True)
    child = None
    try:
        child = LiveRun(runs_dir, getattr(request, "param", V1))
        yield child
    finally:
        if child is not None and child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


def test_delete_archive_and_prune_refuse_a_run_being_written(runs_dir, live, capsys):
    older = run(runs_dir)  # the same prompt, finished: prune may archive it
    where = ["--runs-dir", str(runs_dir)]
    assert cli(["delete", live.run_id, *where]) == 2
    err = capsys.readouterr().err
    assert "being written by another process" in err and "wait for it to end" in err and "Traceback" not in err
    assert cli(["delete", live.run_id, "--force", *where]) == 2
    assert cli(["archive", live.run_id, *where]) == 2
    assert "being written by another process" in capsys.readouterr().err
    assert cli(["tag", live.run_id, "archived", *where]) == 2
    capsys.readouterr()
    assert cli(["prune", "--keep-last", "0", *where]) == 0
    out = capsys.readouterr().out
    assert f"skip    {live.run_id}" in out and "being written" in out
    assert f"archive {older.run_id}" in out
    with pytest.raises(UsageError, match="being written"):
        lifecycle.delete(live.run_id, runs_dir)
    assert (runs_dir / live.run_id / "events.jsonl").is_file()
    assert lifecycle.read_tags(runs_dir / live.run_id) == []
    status, state, run_id, evaluations, calls = live.finish().split()
    assert (status, state, run_id) == ("DONE", "finished", live.run_id)
    stored = prompt_attr.load_run(run_id, runs_dir=runs_dir)
    assert stored.status == "finished" and len(stored.record.evaluations) == int(evaluations)
    assert cli(["delete", live.run_id, *where]) == 0  # once it ended


def test_ls_and_show_see_a_live_run_as_running(runs_dir, live, capsys):
    [summary] = prompt_attr.list_runs(runs_dir)
    assert summary.run_id == live.run_id and summary.status == "running"
    assert cli(["show", live.run_id, "--runs-dir", str(runs_dir), "--no-color"]) == 0
    assert "running" in capsys.readouterr().out
    with pytest.raises(UsageError, match="still running"):
        prompt_attr.attribute(resume=live.run_id, backend=FakeBackend(), runs_dir=runs_dir)
    assert live.finish().startswith("DONE finished")


@pytest.mark.parametrize("live", [LONG], indirect=True)
def test_a_run_whose_folder_is_deleted_under_it_stops_paying(runs_dir, live):
    shutil.rmtree(runs_dir / live.run_id)  # by hand (rm -rf): the lock cannot stop that
    status, calls, *message = live.finish().split(" ", 2)
    assert status == "ERROR" and "was deleted while" in message[0]
    # of 31 calls (baseline and 30 spans): the baseline, the paused answer, the one then in flight
    # and at most one more (concurrency 1); before, the run went on to ask all 31
    assert int(calls) <= 4, calls
