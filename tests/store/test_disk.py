"""The runs folder under stress: a full disk, concurrent writers, id clashes, 1,000 runs.

The full-disk test fills a real, tiny tmpfs when the machine allows mounting
one (root in a container); elsewhere it caps the file size a child process
may write (RLIMIT_FSIZE), which makes the kernel fail writes the same way.
Either way a write really fails mid-run, not a mocked one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import prompt_attr
from prompt_attr import PromptAttrError
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.cli import main as cli
from prompt_attr_widget.core.events import EVENT_ADAPTER
from prompt_attr_widget.store import runs
from prompt_attr_widget.store.runs import read_run, run_ids

PROMPT = " ".join(f"Sentence {i} mentions Item{i} here." for i in range(40))
# Calls slower than disk writes, one at a time: a failed write is then noticed before the
# next answer arrives (instant calls would all be done before the first write failed).
LATENCY = 0.005
PRICE = prompt_attr.Price(input=1.0, output=2.0)


# --- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs, or None when this machine does not let the tests mount one."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill a file system until only about `leave` bytes are free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def run_on_a_full_disk(runs_dir: Path, leave: int) -> tuple[str, int, int]:
    """Attribute PROMPT into runs_dir, in this process; returns (error message, chat calls, all requests)."""
    backend = FakeBackend(latency=LATENCY, price=PRICE, embed_price=PRICE)
    with pytest.raises(PromptAttrError) as info:
        prompt_attr.attribute(PROMPT, backend=backend, runs_dir=runs_dir, method="loo", cache=False, concurrency=1)
    return str(info.value), backend.calls, backend.calls + backend.embed_calls


CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import prompt_attr
    from prompt_attr import Price
    from prompt_attr_widget.backends.fake import FakeBackend
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    price = Price(input=1.0, output=2.0)
    backend = FakeBackend(latency=float(sys.argv[4]), price=price, embed_price=price)
    try:
        prompt_attr.attribute(sys.argv[3], backend=backend, runs_dir=sys.argv[1], method="loo",
                              cache=False, concurrency=1)
    except prompt_attr.PromptAttrError as exc:
        print(f"ERROR {backend.calls} {backend.calls + backend.embed_calls} {exc}")
    else:
        print(f"FINISHED {backend.calls} {backend.calls + backend.embed_calls}")
    """
)


def run_with_a_file_size_cap(runs_dir: Path, limit: int) -> tuple[str, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(runs_dir), str(limit), PROMPT, str(LATENCY)], capture_output=True, text=True, timeout=120
    ).stdout.strip()
    status, calls, requests, *message = out.split(" ", 3)
    assert status == "ERROR", out
    return message[0], int(calls), int(requests)


def run_out_of_room(tiny_disk, tmp_path, room: int) -> tuple[Path, str, int, int]:
    """A run with only `room` bytes to write in: a filled tmpfs, or else a file-size cap."""
    if tiny_disk is not None:
        runs_dir = tiny_disk / "runs"
        runs_dir.mkdir()
        fill(tiny_disk, room)
        message, calls, requests = run_on_a_full_disk(runs_dir, room)
        assert "No space left on device" in message
    else:
        runs_dir = tmp_path / "runs"
        message, calls, requests = run_with_a_file_size_cap(runs_dir, max(1, room))
        assert "File too large" in message
    assert "free some space" in message and "--runs-dir" in message
    return runs_dir, message, calls, requests


@pytest.mark.parametrize("room", [2_000, 12_000, 40_000])
def test_a_full_disk_mid_run_is_a_clear_error_and_leaves_no_corrupt_run(tiny_disk, tmp_path, room):
    runs_dir, _, calls, _ = run_out_of_room(tiny_disk, tmp_path, room)
    saved = 0
    for run_id in run_ids(runs_dir):  # whatever is left is a readable run, never a corrupt one
        record = read_run(run_id, runs_dir)
        assert record.status in ("aborted", "failed")
        saved = len(record.evaluations) + (record.baseline is not None)
    # it stopped paying at the first write that failed: at most the answer whose write failed
    # and the call then in flight (concurrency 1) are unsaved
    assert saved <= calls <= saved + 2, (saved, calls)
    assert all(s.status != "corrupt" for s in prompt_attr.list_runs(runs_dir))


def test_a_full_disk_before_the_run_starts_costs_nothing(tiny_disk, tmp_path):
    runs_dir, _, calls, _ = run_out_of_room(tiny_disk, tmp_path, 0)
    assert calls == 0
    assert run_ids(runs_dir) == []  # no half-made run folder left behind


@pytest.mark.parametrize("room", [2_000, 12_000, 40_000])
def test_a_full_disk_mid_run_sends_no_request_it_could_not_book_on_disk(tiny_disk, tmp_path, room):
    """Each request's reservation is written before it is sent: once the disk is full no
    request goes out, and the run rebuilt from what reached the disk counts every one sent."""
    runs_dir, _, _, requests = run_out_of_room(tiny_disk, tmp_path, room)
    for run_id in run_ids(runs_dir):
        lines = (runs_dir / run_id / "events.jsonl").read_text("utf-8", errors="replace").splitlines()
        booked = sum(line.startswith('{"type":"call_reserved"') and line.endswith("}") for line in lines)  # whole lines
        assert requests <= booked, (requests, booked)
        record = read_run(run_id, runs_dir)
        assert record.spend.counted_usd > 0 and record.spend.calls >= requests


KILLED_BEFORE_ITS_FIRST_WRITE = textwrap.dedent(
    """
    import os, sys
    from prompt_attr_widget.store.runs import RunWriter
    print(RunWriter(sys.argv[1]).reserve(), flush=True)
    os._exit(9)  # as SIGKILL or the OOM killer would: no clean-up runs
    """
)


def test_a_run_folder_left_empty_is_shown_as_empty_and_can_be_removed(runs_dir, capsys):
    empty = [subprocess.run([sys.executable, "-c", KILLED_BEFORE_ITS_FIRST_WRITE, str(runs_dir)], capture_output=True,
                            text=True, timeout=60).stdout.strip() for _ in range(2)]
    assert run_ids(runs_dir) == sorted(empty)  # what a killed writer leaves: a folder and an empty events.jsonl
    kept = prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    assert [s.status for s in prompt_attr.list_runs(runs_dir)] == ["empty", "empty", "finished"]
    assert cli(["ls", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 empty: a run folder with no event in it" in out and f"prompt-attr delete {empty[0]}" in out
    assert "corrupt" not in out
    assert cli(["show", empty[0], "--runs-dir", str(runs_dir)]) == 1
    err = capsys.readouterr().err
    assert "is empty" in err and f"prompt-attr delete {empty[0]}" in err and len(err.splitlines()) == 1
    assert cli(["delete", empty[0], "--runs-dir", str(runs_dir)]) == 0
    assert cli(["prune", "--keep-last", "5", "--runs-dir", str(runs_dir)]) == 0
    assert f"delete  {empty[1]}" in capsys.readouterr().out
    assert run_ids(runs_dir) == [kept.run_id]


def test_an_unwritable_runs_folder_fails_before_any_call(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    backend = FakeBackend()
    with pytest.raises(PromptAttrError, match="cannot write the run .*--runs-dir"):
        prompt_attr.attribute(PROMPT, backend=backend, runs_dir=not_a_folder / "runs")
    assert backend.calls == 0


# --- ids and concurrent writers ---------------------------------------------------------------------


def test_a_clashing_run_id_is_replaced_not_overwritten(runs_dir, monkeypatch):
    first = prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    ids = iter([first.run_id, first.run_id, "20990101T000000000Z-0000abcd"])
    monkeypatch.setattr(runs, "new_run_id", lambda: next(ids))
    second = prompt_attr.attribute("It rains. Zebra Crossing.", backend=FakeBackend(), runs_dir=runs_dir)
    assert second.run_id == "20990101T000000000Z-0000abcd"
    assert read_run(first.run_id, runs_dir).prompt == PROMPT  # the first run is untouched


def _write_runs(args) -> list[str]:
    runs_dir, worker, count = args
    out = []
    for i in range(count):
        prompt = f"Worker {worker} writes Run{i}. It is raining. The Blue Falcon landed."
        out.append(prompt_attr.attribute(prompt, backend=FakeBackend(), runs_dir=runs_dir, method="loo").run_id)
    return out


def test_processes_writing_into_one_folder_do_not_clobber_each_other(runs_dir):
    workers, count = 4, 15
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        made = pool.map(_write_runs, [(str(runs_dir), w, count) for w in range(workers)])
    ids = [i for batch in made for i in batch]
    assert len(ids) == len(set(ids)) == workers * count
    assert sorted(ids) == run_ids(runs_dir)
    for worker, batch in enumerate(made):
        for i, run_id in enumerate(batch):
            record = read_run(run_id, runs_dir)
            assert record.status == "finished" and record.prompt.startswith(f"Worker {worker} writes Run{i}.")
            lines = (runs_dir / run_id / "events.jsonl").read_text("utf-8").splitlines()
            assert all(EVENT_ADAPTER.validate_json(line) for line in lines)


# --- listing many runs -------------------------------------------------------------------------------


def copy_run(source: Path, runs_dir: Path, count: int) -> None:
    """Clone one stored run under `count` fresh ids (what 1,000 real runs look like on disk)."""
    record = json.loads((source / "run.json").read_text("utf-8"))
    summary = json.loads((source / "summary.json").read_text("utf-8"))
    events = (source / "events.jsonl").read_bytes()
    for _ in range(count):
        run_id = runs.new_run_id()
        folder = runs_dir / run_id
        folder.mkdir()
        data = json.dumps({**record, "run_id": run_id}, indent=1)
        (folder / "run.json").write_text(data, "utf-8")
        (folder / "summary.json").write_text(
            json.dumps({**summary, "run_id": run_id, "run_json_bytes": len(data.encode())}), "utf-8"
        )
        (folder / "events.jsonl").write_bytes(events)


def test_ls_over_a_thousand_runs_answers_in_under_a_second(runs_dir, capsys):
    base = prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    copy_run(base.path, runs_dir, 999)
    truncated, broken = run_ids(runs_dir)[500], run_ids(runs_dir)[700]
    (runs_dir / truncated / "run.json").write_text('{"run_id": "trunc', "utf-8")  # its summary is now stale
    (runs_dir / broken / "run.json").write_text('{"run_id": "trunc', "utf-8")
    (runs_dir / broken / "events.jsonl").write_text("", "utf-8")  # and nothing to rebuild it from
    started = time.perf_counter()
    listed = prompt_attr.list_runs(runs_dir)
    api_s = time.perf_counter() - started
    started = time.perf_counter()
    assert cli(["ls", "--runs-dir", str(runs_dir)]) == 0
    cli_s = time.perf_counter() - started
    out = capsys.readouterr().out
    assert len(listed) == 1000 and len(out.splitlines()) == 1001
    assert [s.status for s in listed].count("corrupt") == 1 and listed[700].status == "corrupt"
    assert listed[500].status == "finished"  # rebuilt from its events
    assert api_s < 1.0 and cli_s < 1.0, (api_s, cli_s)


def test_ls_rebuilds_a_run_whose_summary_is_missing_or_still_running(runs_dir):
    a = prompt_attr.attribute(PROMPT, backend=FakeBackend(), runs_dir=runs_dir, method="loo")
    os.remove(a.path / "summary.json")
    [summary] = prompt_attr.list_runs(runs_dir)
    assert summary.status == "finished" and summary.evaluations == len(a.record.evaluations)
