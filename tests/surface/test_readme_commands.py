"""The README starts with the two set-up commands, and CI runs the second one exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)[:2]]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    install_and_run, test = readme_commands()
    assert install_and_run.startswith("python3 -m pip install '.[local]'") and "prompt-attr run" in install_and_run
    assert test == "python3 -m pip install '.[local,server,test]' && python3 -m pytest"
    commands = [line for line in (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == test
    # the rest only sets the shell up: chromium comes from the test session (tests/browser_harness.py)
    assert all(re.match(r"(set |cd |export |python3 --version$)", line) for line in commands[:-1]), commands
