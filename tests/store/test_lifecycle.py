"""Labels, tags, ls filters, archive/restore/delete and the retention policy."""

from __future__ import annotations

import json

import pytest

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli
from prompt_attr_widget.store import lifecycle

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
