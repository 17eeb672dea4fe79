"""What a run paid for survives the process: SIGKILL, SIGTERM and repeated Ctrl-C, through real CLI processes.

Every billed request's reservation reaches events.jsonl before the request
is sent, and its cost before its answer is used (engine/evaluate.py), so a
run killed at any moment is rebuilt counting every call it made, those in
flight at their worst case, and `resume --budget B` keeps the whole run's
bill, counted by the server, within B.

The runs are `prompt-attr` processes against tests/fault_server.py, which
answers slowly at times (so calls are in flight when the signal lands) and
counts what it bills. Each trial has its own server and folders, so trials
run side by side.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fault_server import serve

from prompt_attr import Price
from prompt_attr_widget.store.runs import read_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

KEY = "sk-test-kills"
PRICE = Price(input=3.0, output=12.0)
EMBED_PRICE = Price(input=3.0)  # a custom server's embeddings are priced at its input price
PROMPT = " ".join(f"{w} said it twice." for w in (
    "Alder", "Birch", "Cedar", "Dogwood", "Elm", "Fir", "Ginkgo", "Hazel", "Ilex", "Juniper", "Kapok", "Larch"))
STEP_S = 60  # no step of a trial may take longer: a hang is reported with every thread's stack


@dataclass
class Folders:
    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def prompt(self) -> Path:
        path = self.root / "prompt.txt"
        if not path.exists():
            path.write_text(PROMPT, encoding="utf-8")
        return path

    def env(self) -> dict:
        return {**os.environ, "OPENAI_API_KEY": KEY, "PROMPT_ATTR_RUNS_DIR": str(self.runs),
                "PROMPT_ATTR_CACHE_DIR": str(self.root / "cache"), "PYTHONFAULTHANDLER": "1", "NO_COLOR": "1"}


def run_args(server, budget: float | None, concurrency: int) -> list[str]:
    args = ["--model", "srv", "--base-url", server.url, "--price-in", str(PRICE.input), "--price-out",
            str(PRICE.output), "--method", "loo", "--faithfulness", "off", "--scorer", "embedding",
            "--max-tokens", "4", "--no-cache", "--timeout", "10", "--concurrency", str(concurrency)]
    return args + (["--budget", repr(budget)] if budget is not None else [])


def cli(folders: Folders, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prompt_attr_widget.cli", *args], env=folders.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folders.root)


def finish(proc: subprocess.Popen, step: str) -> tuple[int, str, str]:
    """Wait for the process; if it hangs, fail with where every thread of it was (faulthandler)."""
    try:
        out, err = proc.communicate(timeout=STEP_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER=1: every thread's stack to stderr
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{step}: no exit after {STEP_S}s; where it hung:\n{err[-6000:]}")
    return proc.returncode, out, err


def events_written(runs: Path) -> int:
    """Lines of the only run's events.jsonl so far (0 before the run has a folder)."""
    found = list(runs.glob("*/events.jsonl")) if runs.exists() else []
    return found[0].read_bytes().count(b"\n") if found else 0


def wait_for_events(proc: subprocess.Popen, runs: Path, lines: int) -> bool:
    """Until events.jsonl holds `lines` lines; False if the process ended first."""
    deadline = time.monotonic() + STEP_S
    while time.monotonic() < deadline:
        if events_written(runs) >= lines:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.003)
    pytest.fail(f"the run wrote fewer than {lines} events in {STEP_S}s")


def billed(server) -> float:
    return server.stats.cost(PRICE, EMBED_PRICE)


TEMPLATE_TOKENS = 40  # the kill trials' server bills a chat template's tokens, which the projection does not see


def clean_run(tmp_path, extra_tokens: int = 0) -> tuple[float, float, int, dict]:
    """An uninterrupted run: what it costs on the server, its projection, the lines it writes, its attribution."""
    folders = Folders(tmp_path / f"clean-{extra_tokens}")
    folders.root.mkdir()
    with serve(extra_tokens=extra_tokens) as server:
        code, out, err = finish(cli(folders, "run", str(folders.prompt), *run_args(server, None, 4), "--json"), "clean run")
        assert code == 0, err
        record = json.loads(out)
        return billed(server), record["projected_usd"], events_written(folders.runs), scores(record)


def scores(record: dict) -> dict:
    return {s["index"]: round(s["score"], 9) for s in record["attribution"]}


@dataclass
class Kill:
    signal: str
    budget: float
    killed_at: int  # events on disk when the signal was sent
    exit: int
    before_kill: float  # USD the server billed by the time the killed process was gone
    total: float  # USD billed by both sessions
    counted: float  # what the killed run's record counted as spent, reservations included
    asked_again: list  # stored answers the resume asked for once more (must stay empty)
    resumed_status: str


def kill_trial(tmp_path, i: int, cost: float, projected: float, lines: int) -> Kill | None:
    """One budgeted run killed at a random moment, then resumed with the same budget.

    The moment is a number of events on disk; a run the budget stops before it is tried again
    with an earlier moment (at most three times), so nearly every trial is a kill.
    """
    rng = random.Random(7000 + i)
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    # Over the projection, or the run is refused before it starts; the template's tokens put the
    # cost above it, so the budget stops many runs part-way (where a resume that forgot what the
    # killed session paid would pass it). Calls cut off count at their worst case, so some
    # budgets leave room to resume and some do not.
    budget = rng.uniform(projected * 1.01, cost * 2.5)
    upper = int(lines * 0.7)
    for attempt in range(3):
        folders = Folders(tmp_path / f"kill-{i}-{attempt}")
        folders.root.mkdir()
        with serve(rate=0.4, kinds=["slow"], slow_s=rng.choice([0.02, 0.08, 0.2]), seed=i,
                   extra_tokens=TEMPLATE_TOKENS) as server:
            proc = cli(folders, "run", str(folders.prompt), *run_args(server, budget, rng.randint(1, 12)))
            at = rng.randint(2, max(2, upper))
            if wait_for_events(proc, folders.runs, at):
                time.sleep(rng.uniform(0, 0.05))
                proc.send_signal(sig)
                return _killed(proc, folders, server, sig, budget, at)
            finish(proc, "run")
            upper = at // 2  # the budget stopped the run before that moment: try an earlier one
    return None


def _killed(proc, folders: Folders, server, sig, budget: float, at: int) -> Kill:
    code, _, err = finish(proc, f"run after {sig.name}")
    if sig == signal.SIGTERM and code not in (0, 3):  # 0, 3: it had ended before the signal
        assert code == 143, err
        assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    before = billed(server)
    run_id = next(folders.runs.iterdir()).name
    stored = read_run(run_id, folders.runs)
    kept = {(e.purpose, tuple(e.dropped), e.repeat) for e in stored.evaluations}
    again, status = [], stored.status
    if stored.status != "finished" and stored.stopped_by != "budget":
        rcode, out, rerr = finish(cli(folders, "resume", run_id, "--budget", repr(budget), "--json"), "resume")
        assert rcode in (0, 3), rerr
        assert "Traceback" not in rerr, rerr
        status = "refused" if not out.strip() else json.loads(out)["status"]
        if out.strip():
            record = json.loads(out)
            later = record["evaluations"][len(stored.evaluations):]
            again = [e for e in later if (e["purpose"], tuple(e["dropped"]), e["repeat"]) in kept]
    return Kill(sig.name, budget, at, code, before, billed(server), stored.spend.counted_usd, again, status)


def test_thirty_two_kills_then_resume_never_pass_the_budget(tmp_path):
    """SIGKILL or SIGTERM at a random moment of a budgeted run, then `resume --budget B`: the server's
    bill for both sessions stays within B, and no answer the killed run stored is asked for again."""
    cost, projected, lines, _ = clean_run(tmp_path, TEMPLATE_TOKENS)
    assert projected < cost
    with ThreadPoolExecutor(4) as pool:
        trials = [t for t in pool.map(lambda i: kill_trial(tmp_path, i, cost, projected, lines), range(40)) if t]
    over = [t for t in trials if t.total > t.budget + 1e-12]
    undercounted = [t for t in trials if t.counted + 1e-12 < t.before_kill]
    repaid = [t for t in trials if t.asked_again]
    worst = max(t.total / t.budget for t in trials)
    print(f"kills: {len(trials)} trials ({sum(t.signal == 'SIGKILL' for t in trials)} SIGKILL), "
          f"{len(over)} over budget, worst bill {worst:.2f}x the budget, {len(undercounted)} undercounted, "
          f"{len(repaid)} re-paid; resumed: {dict(Counter(t.resumed_status for t in trials))}")
    assert len(trials) >= 30
    assert over == []
    assert undercounted == []  # what the rebuilt run counts covers what the server billed before the kill
    assert repaid == []
    assert sum(t.total > t.before_kill for t in trials) >= 10  # resumes that bought answers, not only refusals


def test_sigterm_saves_the_run_and_exits_143(tmp_path):
    folders = Folders(tmp_path / "term")
    folders.root.mkdir()
    with serve(rate=1.0, kinds=["slow"], slow_s=0.3) as server:
        proc = cli(folders, "run", str(folders.prompt), *run_args(server, None, 2))
        assert wait_for_events(proc, folders.runs, 4)
        proc.send_signal(signal.SIGTERM)
        code, _, err = finish(proc, "run after SIGTERM")
        assert code == 143, err
        assert "stopped by SIGTERM" in err and "prompt-attr resume" in err and "Traceback" not in err, err
        record = read_run("latest", folders.runs)
        assert record.status == "aborted"
        assert record.reason.startswith("interrupted (SIGTERM)")
        assert record.spend.counted_usd >= billed(server) - 1e-12


def interrupt_trial(tmp_path, i: int, lines: int) -> tuple[int, int, str, dict | None]:
    """1-3 SIGINTs at random moments; the process must exit within STEP_S, the run saved.

    Returns the presses, the exit code, the status the run was stored with and the record
    resuming it gave (None when it had finished before the first interrupt landed).
    """
    rng = random.Random(9100 + i)
    folders = Folders(tmp_path / f"int-{i}")
    folders.root.mkdir()
    presses = rng.randint(1, 3)
    with serve(rate=0.5, kinds=["slow"], slow_s=rng.choice([0.05, 0.3, 1.0]), seed=i) as server:
        proc = cli(folders, "run", str(folders.prompt), *run_args(server, None, rng.randint(1, 20)))
        assert wait_for_events(proc, folders.runs, rng.randint(1, lines // 2))
        for _ in range(presses):
            time.sleep(rng.uniform(0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc, f"run after {presses} Ctrl-C")
        # 130: saved and reported; -SIGINT: a press after the run was saved (the process was
        # exiting) or the third one, which ends it at once: what was paid for is on disk either way
        assert code in (0, 130, -signal.SIGINT), err
        assert "Traceback" not in err, err
        if code == 130:
            assert "interrupted" in err and "is saved" in err, err
        run_id = next(folders.runs.iterdir()).name
        shown = finish(cli(folders, "show", run_id), "show")
        assert shown[0] == 0, shown[2]
        status = read_run(run_id, folders.runs).status
        if status == "finished":
            return presses, code, status, None
        resumed = finish(cli(folders, "resume", run_id, "--json"), "resume")
        assert resumed[0] == 0, resumed[2]
        return presses, code, status, json.loads(resumed[1])


def test_repeated_ctrl_c_never_hangs_and_the_resumed_run_equals_a_clean_one(tmp_path):
    """20 runs each sent one to three SIGINTs at random moments, with a per-step timeout that
    reports every thread's stack where a process hangs; each run is then shown and resumed."""
    _, _, lines, clean = clean_run(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        trials = list(pool.map(lambda i: interrupt_trial(tmp_path, i, lines), range(20)))
    print(f"interrupts: {len(trials)} runs, exit codes {sorted({code for _, code, _, _ in trials})}, "
          f"stopped mid-run {sum(status == 'aborted' for _, _, status, _ in trials)}")
    for presses, code, _, record in trials:
        if record is not None:
            assert record["status"] == "finished"
            assert scores(record) == pytest.approx(clean, abs=1e-9), (presses, code)
    assert sum(status == "aborted" for _, _, status, _ in trials) >= 15


def test_at_every_write_the_disk_counts_at_least_what_the_server_billed(runs_dir, monkeypatch):
    """Were the process killed just after any write of a run, the run rebuilt from its
    events.jsonl would count at least what the server had billed by then."""
    import prompt_attr
    from prompt_attr_widget.store import runs

    checked, short = [], []
    append = runs.RunWriter._append

    def checked_append(writer, event):
        append(writer, event)
        counted = runs.replay_events(writer.path, live=True).spend.counted_usd
        checked.append(counted)
        if counted + 1e-12 < billed(server):
            short.append((event.type, counted, billed(server)))

    monkeypatch.setattr(runs.RunWriter, "_append", checked_append)
    with serve(rate=0.3, kinds=["slow", "http_503"], slow_s=0.02, extra_tokens=TEMPLATE_TOKENS) as server:
        run = prompt_attr.attribute(PROMPT, model="srv", base_url=server.url, api_key=KEY, runs_dir=runs_dir,
                                    cache=False, price=PRICE, method="loo", faithfulness="off", max_tokens=4,
                                    concurrency=8)
        assert run.status == "finished"
        assert short == []
        assert len(checked) > 50 and checked[-1] >= billed(server) - 1e-12


def test_a_run_killed_mid_call_shows_what_it_counts_for_the_calls_in_flight(tmp_path):
    folders = Folders(tmp_path / "mid-call")
    folders.root.mkdir()
    with serve(rate=1.0, kinds=["slow"], slow_s=1.0) as server:
        proc = cli(folders, "run", str(folders.prompt), *run_args(server, 1.0, 4))
        assert wait_for_events(proc, folders.runs, 2)  # run_started, then the baseline's reservation
        proc.send_signal(signal.SIGKILL)
        finish(proc, "run after SIGKILL")
    record = read_run("latest", folders.runs)
    assert record.status == "aborted" and record.spend.reserved_usd > 0
    code, out, err = finish(cli(folders, "show", "latest", "--no-color"), "show")
    assert code == 0, err
    assert "of it for calls in flight when the run stopped" in out, out


TOKENS_CHILD = """
import sys
import prompt_attr
from prompt_attr_widget.backends.fake import FakeBackend

def tell(event):
    print(type(event).__name__, flush=True)

args = dict(backend=FakeBackend(logprobs=True, latency=0.06), runs_dir=sys.argv[1], method="loo", cache=False,
            concurrency=3, on_event=tell)
if len(sys.argv) > 2:
    prompt_attr.attribute(resume=sys.argv[2], **args)
else:
    prompt_attr.attribute(PROMPT, **args)
""".replace("PROMPT", repr(PROMPT))


@pytest.mark.parametrize(("evaluated", "then"), [(1, 0.0), (3, 0.01), (5, 0.02), (8, 0.0)])
def test_a_killed_log_probability_run_keeps_every_stored_token_number_and_resumes_to_the_same_parts(
        tmp_path, evaluated, then):
    """SIGKILL at any moment: every evaluation events.jsonl names has its numbers in logprobs.f32
    (they are written first), and the resumed run explains any part as a clean run does."""
    import prompt_attr
    from prompt_attr_widget.backends.fake import FakeBackend

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", TOKENS_CHILD, str(runs)], stdout=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stdout:
        seen += line.strip() == "Evaluated"
        if seen == evaluated:
            break
    time.sleep(then)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=STEP_S)
    (run_id,) = [p.name for p in runs.iterdir()]
    stopped = read_run(run_id, runs)
    assert stopped.status == "aborted" and len(stopped.evaluations) >= evaluated
    assert all(e.tokens is not None and e.tokens.values is not None for e in stopped.evaluations)
    subprocess.run([sys.executable, "-c", TOKENS_CHILD, str(runs), run_id], check=True, timeout=STEP_S,
                   stdout=subprocess.DEVNULL)
    resumed = prompt_attr.load_run(run_id, runs)
    assert resumed.status == "finished" and resumed.matrix_error() is None
    clean = prompt_attr.attribute(PROMPT, backend=FakeBackend(logprobs=True), runs_dir=tmp_path / "clean",
                                  method="loo", cache=False)
    for target in ("Cedar", (0, 5)):
        got, want = resumed.for_target(target), clean.for_target(target)
        assert [s.score for s in got.spans] == pytest.approx([s.score for s in want.spans], abs=1e-6)


def test_a_ctrl_c_while_the_interpreter_waits_for_worker_threads_ends_it_without_a_traceback(tmp_path):
    """After the command's last word (a run saved, its message printed) Python's shutdown
    joins worker threads; a Ctrl-C then ended in a KeyboardInterrupt traceback from the
    threading module. `cli.exit_with` makes it end the process at once instead."""
    script = (
        "import threading, time, sys\n"
        "from prompt_attr_widget import cli\n"
        "threading.Thread(target=time.sleep, args=(30,)).start()  # a worker still busy at exit\n"
        "print('exiting', flush=True)\n"
        "cli.exit_with(130)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    assert proc.stdout.readline() == "exiting\n"
    time.sleep(0.5)  # in the interpreter's shutdown, joining the thread
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=STEP_S)
    assert proc.returncode == -signal.SIGINT and "Traceback" not in err, err
