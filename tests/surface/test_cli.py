"""The prompt-attr command: run, ls, show, exit codes and hostile input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import prompt_attr
from prompt_attr_widget import cli
from prompt_attr_widget.backends import fake as fake_module
from prompt_attr_widget.store.runs import run_ids

PROMPT = "# Role\nYou are a tutor.\n\n# Facts\nThe capital of France is Paris.\n\n# Filler\nwe like tea. cats sleep.\n"


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompt.md"
    path.write_text(PROMPT, encoding="utf-8")
    return path


def run_cli(*argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_ls_show_roundtrip(prompt_file, capsys):
    code, out, err = run_cli("run", prompt_file, "--model", "fake", "--no-color", capsys=capsys)
    assert code == 0, err
    assert "The capital of France is Paris." in out
    assert "rank  span" in out and "finished" in out
    code, out, _ = run_cli("ls", capsys=capsys)
    assert code == 0 and "finished" in out and "fake" in out
    run_id = out.splitlines()[1].split()[0]
    code, shown, _ = run_cli("show", run_id, "--no-color", capsys=capsys)
    assert code == 0 and "The capital of France is Paris." in shown


def test_ls_shows_whole_model_names_in_aligned_columns(runs_dir, capsys):
    for model in ("SmolLM2-135M-Instruct", "fake"):
        backend = fake_module.FakeBackend()
        backend.info.model = model
        prompt_attr.attribute(PROMPT, backend=backend, runs_dir=runs_dir, faithfulness="off")
    code, out, _ = run_cli("ls", "--runs-dir", runs_dir, capsys=capsys)
    assert code == 0 and "SmolLM2-135M-Instruct " in out  # was cut to "SmolLM2-135M-Instruc"
    header, *rows = out.splitlines()
    assert all(row.index(" finished ") == header.index("status") - 1 for row in rows)
    end = header.index("spend") + len("spend")
    assert all(row.index("  ", row.rindex("$")) == end for row in rows)  # the spend column lines up


def test_run_json_is_the_run_record(prompt_file, capsys):
    code, out, _ = run_cli("run", prompt_file, "--model", "fake", "--json", capsys=capsys)
    assert code == 0
    record = json.loads(out)
    assert record["status"] == "finished" and record["schema_version"] == 3
    assert len(record["attribution"]) == len(record["spans"])
    code, out, _ = run_cli("ls", "--json", capsys=capsys)
    assert json.loads(out)[0]["run_id"] == record["run_id"]


def test_stdin_and_empty_prompt(monkeypatch, capsys):
    class FakeStdin:
        buffer = __import__("io").BytesIO(b"   \n\t\n")

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    code, _, err = run_cli("run", "-", "--model", "fake", capsys=capsys)
    assert code == 2 and "empty" in err


def test_binary_junk_is_a_usage_error(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    code, _, err = run_cli("run", junk, "--model", "fake", capsys=capsys)
    assert code == 2 and "not UTF-8" in err


def test_missing_file_and_bad_run_ids(tmp_path, capsys):
    code, _, err = run_cli("run", tmp_path / "nope.txt", capsys=capsys)
    assert code == 2 and "cannot read" in err
    for bad in ("../../etc/passwd", "/etc", "a/b", ".."):
        code, _, err = run_cli("show", bad, capsys=capsys)
        assert code == 2 and "not a run id" in err
    code, _, err = run_cli("show", "20991231T000000000Z-00000000", capsys=capsys)
    assert code == 1 and "no run" in err


def test_budget_refusal_exits_3(prompt_file, capsys):
    code, _, err = run_cli(
        "run", prompt_file, "--model", "fake", "--budget", "0.000001", "--price-in", "100", "--price-out", "100",
        capsys=capsys,
    )
    assert code == 3 and "projected to cost about $" in err and "(an estimate)" in err and "raise --budget" in err


def test_the_projection_is_printed_as_an_estimate(runs_dir):
    # The projection estimates typical token counts: a server's template may bill more, so it is
    # never printed as "at most"; the budget is what holds.
    import io

    import prompt_attr
    from prompt_attr import Price

    for budget, tail in ((5.0, "; the budget of $5.0000 is enforced call by call)"), (None, ")")):
        stream = io.StringIO()
        run = prompt_attr.attribute(
            PROMPT, model="fake", price=Price(input=1, output=1), budget=budget, runs_dir=runs_dir,
            on_event=cli.ProgressLine(stream=stream),
        )
        line = stream.getvalue().splitlines()[0]
        assert run.status == "finished" and line.startswith(f"run {run.run_id}: ")
        assert f"projected about {cli.usd(run.record.projected_usd)} (an estimate, not a limit{tail}" in line
        assert "at most" not in line


def test_unknown_model_and_missing_key(prompt_file, capsys):
    code, _, err = run_cli("run", prompt_file, "--model", "no-such-model", capsys=capsys)
    assert code == 2 and "unknown model" in err and "local" in err
    code, _, err = run_cli("run", prompt_file, "--model", "gpt-4o-mini", capsys=capsys)
    assert code == 1 and "OPENAI_API_KEY" in err and "--model local" in err


def test_invalid_option_values(prompt_file, capsys):
    code, _, err = run_cli("run", prompt_file, "--model", "fake", "--concurrency", "0", capsys=capsys)
    assert code == 2 and "concurrency" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", str(prompt_file), "--segment", "chapters"])
    assert exc.value.code == 2


def test_hostile_prompt_never_reaches_the_terminal_raw(tmp_path, capsys):
    path = tmp_path / "evil.txt"
    path.write_text("Hello \x1b[2J\x1b]0;pwned\x07 World.\n\nSecond \u202eReversed part.", encoding="utf-8")
    code, out, _ = run_cli("run", path, "--model", "fake", capsys=capsys)
    assert code == 0
    assert "\x1b[2J" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out


def test_console_script_entry_point(prompt_file, tmp_path):
    env_run = subprocess.run(
        [sys.executable, "-m", "prompt_attr_widget.cli", "run", str(prompt_file), "--model", "fake", "--no-color"],
        capture_output=True, text=True, timeout=120,
    )
    assert env_run.returncode == 0, env_run.stderr
    assert "pass 0 done" in env_run.stderr  # progress goes to stderr when not a terminal


def test_fake_backend_is_never_the_default():
    assert cli._parser().parse_args(["run", "x"]).model == "local"
    assert fake_module.FakeBackend().info.backend == "fake"


def test_ls_and_show_start_without_the_engine():
    """`prompt-attr ls` must answer fast: the CLI module loads no numpy, no SDK, no engine."""
    code = (
        "import sys, prompt_attr_widget.cli\n"
        "heavy = [m for m in ('numpy', 'openai', 'prompt_attr_widget.engine.run') if m in sys.modules]\n"
        "import prompt_attr, prompt_attr_widget.api\n"
        "assert callable(prompt_attr.segment) and callable(prompt_attr.attribute), 'a lazy name shadowed'\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- damaged runs folders: a message that names the problem and what to do, never a traceback ------


def stopped_run(runs_dir) -> str:
    """A run of the fake model interrupted after its baseline and two answers: aborted, resumable."""
    seen = []

    def stop(event):
        seen.append(event)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prompt_attr.attribute(PROMPT, model="fake", runs_dir=runs_dir, method="loo", faithfulness="off", on_event=stop)
    [run_id] = run_ids(runs_dir)
    return run_id


def test_resume_a_stopped_run_whose_run_json_was_cut_short(runs_dir, capsys):
    run_id = stopped_run(runs_dir)
    run_json = runs_dir / run_id / "run.json"
    run_json.write_bytes(run_json.read_bytes()[:300])
    code, out, err = run_cli("ls", capsys=capsys)
    assert code == 0 and f"{run_id}   aborted" in out
    code, out, err = run_cli("resume", run_id, "--no-color", capsys=capsys)
    assert code == 0, err
    assert "finished" in out and "Traceback" not in err
    assert json.loads(run_json.read_text("utf-8"))["status"] == "finished"


def finished_run(runs_dir) -> str:
    return prompt_attr.attribute(PROMPT, model="fake", runs_dir=runs_dir, method="loo").run_id


def assert_one_line_message(err: str, *words: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("prompt-attr: ") and all(w in err for w in words), err


@pytest.mark.parametrize("argv", [["ls"], ["show", "latest"], ["show", "20261203T101500123Z-1a2b3c4d"],
                                  ["export", "latest"], ["prune", "--keep-last", "1"], ["delete", "latest"]])
def test_a_runs_dir_that_is_a_file(tmp_path, capsys, argv):
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("not a folder", "utf-8")
    code, _, err = run_cli(*argv, "--runs-dir", not_a_folder, capsys=capsys)
    assert code == 2
    assert_one_line_message(err, f"{not_a_folder} is a file, not a runs folder", "--runs-dir")


WRONG_TYPES = [{"spans": "3"}, {"evaluations": None}, {"spend_usd": "0.1"}, {"spend_usd": [1]}, {"top_span": 7},
               {"model": None}, {"label": 3}, {"status": 1}, {"spans": True}, {"spend_usd": float("nan")},
               {"spend_usd": float("inf")}, {"spend_usd": 10**400}, {"spans": -2}]


@pytest.mark.parametrize("change", WRONG_TYPES, ids=lambda c: f"{c}")
def test_a_summary_json_with_wrong_types_is_ignored(runs_dir, capsys, change):
    run_id = finished_run(runs_dir)
    listed = run_cli("ls", capsys=capsys)[1]
    path = runs_dir / run_id / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text("utf-8")), **change}), "utf-8")  # NaN as JSON's NaN
    code, out, err = run_cli("ls", capsys=capsys)
    assert code == 0 and "Traceback" not in err
    assert out == listed and run_id in out and "finished" in out  # read from run.json instead
    code, out, _ = run_cli("ls", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)[0]["spans"] == len(prompt_attr.load_run(run_id).spans)


@pytest.mark.parametrize("command", ["ls", "show", "resume", "export"])
def test_a_run_json_that_is_a_directory(runs_dir, capsys, command):
    """With its events, the run is rebuilt from them (resume says what to do first); without, it is corrupt."""
    run_id = stopped_run(runs_dir)
    folder = runs_dir / run_id
    (folder / "run.json").unlink()
    (folder / "run.json").mkdir()
    argv = [command] if command == "ls" else [command, run_id]
    code, out, err = run_cli(*argv, capsys=capsys)
    if command == "resume":
        assert code == 1
        assert_one_line_message(err.split("\n", 1)[1], "run.json is a directory", "remove or rename it")
        assert (folder / "run.json").is_dir() and "run_resumed" not in (folder / "events.jsonl").read_text("utf-8")
    else:
        assert code == 0 and "Traceback" not in err and (command == "export" or "aborted" in out)
    (folder / "events.jsonl").unlink()
    code, out, err = run_cli(*argv, capsys=capsys)
    if command == "ls":
        assert code == 0 and "corrupt" in out and "Traceback" not in err
    else:
        assert code == 1
        assert_one_line_message(err.splitlines()[-1], "is corrupted (run.json is a directory, not a file",
                                "events.jsonl is missing", f"prompt-attr delete {run_id}")


def test_a_nan_spend_in_run_json_is_rebuilt_from_the_events(runs_dir, capsys):
    run_id = finished_run(runs_dir)
    run_json = runs_dir / run_id / "run.json"
    record = json.loads(run_json.read_text("utf-8"))
    record["spend"]["usd"] = float("nan")
    run_json.write_text(json.dumps(record), "utf-8")  # NaN, as json.dumps writes it
    for argv in (["show", run_id, "--no-color"], ["ls"]):
        code, out, err = run_cli(*argv, capsys=capsys)
        assert code == 0 and "$nan" not in out and "$0.0000" in out, out
    (runs_dir / run_id / "events.jsonl").unlink()
    code, out, err = run_cli("show", run_id, capsys=capsys)
    assert code == 1
    assert_one_line_message(err, "is corrupted (run.json does not validate", f"prompt-attr delete {run_id}")
    code, out, _ = run_cli("ls", capsys=capsys)
    assert code == 0 and "$nan" not in out and "corrupt" in out


def test_usd_never_prints_nan():
    from prompt_attr_widget.core.text import usd

    assert [usd(x) for x in (float("nan"), float("inf"), -float("inf"), None)] == ["unknown"] * 4
    assert usd(0.5) == "$0.5000" and usd(0.001) == "$0.001000"


def test_the_schema_refuses_money_that_is_not_a_finite_amount():
    from pydantic import ValidationError

    from prompt_attr_widget.core.schema import Call, Spend

    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValidationError):
            Spend(usd=bad)
        with pytest.raises(ValidationError):
            Call(output="x", cost_usd=bad)
    assert Spend(usd=None).usd is None and Spend.model_validate_json('{"usd": 0.25}').usd == 0.25


LIMITED = "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); " \
          "from prompt_attr_widget.cli import main; sys.exit(main(sys.argv[1:]))"


def test_run_dev_zero_is_refused_without_reading_it_all(tmp_path):
    """Before the cap, `run /dev/zero` read until the process was killed (here: a 1 GiB limit)."""
    done = subprocess.run([sys.executable, "-c", LIMITED, "run", "/dev/zero", "--model", "fake"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert_one_line_message(done.stderr, "/dev/zero is larger than the 4 MiB prompt cap",
                            "PROMPT_ATTR_MAX_PROMPT_BYTES")


def test_the_prompt_cap_is_read_from_the_environment(tmp_path, monkeypatch, capsys):
    prompt = tmp_path / "p.txt"
    prompt.write_bytes(PROMPT.encode())
    monkeypatch.setenv("PROMPT_ATTR_MAX_PROMPT_BYTES", str(len(PROMPT) - 1))
    code, _, err = run_cli("run", prompt, "--model", "fake", capsys=capsys)
    assert code == 2
    assert_one_line_message(err, f"larger than the {len(PROMPT) - 1}-byte prompt cap", "PROMPT_ATTR_MAX_PROMPT_BYTES")
    monkeypatch.setenv("PROMPT_ATTR_MAX_PROMPT_BYTES", str(len(PROMPT)))
    assert run_cli("run", prompt, "--model", "fake", capsys=capsys)[0] == 0  # exactly the cap is allowed
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": __import__("io").BytesIO(PROMPT.encode() + b"!")}))
    code, _, err = run_cli("run", "-", "--model", "fake", capsys=capsys)
    assert code == 2 and "standard input is larger than" in err
    for bad in ("lots", "-5", "0"):
        monkeypatch.setenv("PROMPT_ATTR_MAX_PROMPT_BYTES", bad)
        code, _, err = run_cli("run", prompt, "--model", "fake", capsys=capsys)
        assert code == 2
        assert_one_line_message(err, "PROMPT_ATTR_MAX_PROMPT_BYTES", "a whole number of bytes")


def test_a_failed_target_shows_the_reason_and_the_baseline_only(prompt_file, capsys):
    code, out, err = run_cli("run", prompt_file, "--model", "fake", "--no-color", "--target", "Zanzibar", capsys=capsys)
    assert code == 1, err
    assert "Zanzibar" in out and "baseline output:" in out  # the reason, and what the answer was
    assert "rank  span" not in out and "[0.00]" not in out  # no empty table, no all-zero heat-map
