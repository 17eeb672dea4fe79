"""The prompt-attr command: run, ls, show, exit codes and hostile input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prompt_attr_widget import cli
from prompt_attr_widget.backends import fake as fake_module

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


def test_run_json_is_the_run_record(prompt_file, capsys):
    code, out, _ = run_cli("run", prompt_file, "--model", "fake", "--json", capsys=capsys)
    assert code == 0
    record = json.loads(out)
    assert record["status"] == "finished" and record["schema_version"] == 2
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
