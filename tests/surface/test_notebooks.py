"""The example notebooks run headless, without an error, and still produce their stored outputs.

nbval re-executes every notebook in notebooks/ in a fresh kernel (working
directory notebooks/); every cell must run without an error. It compares
with the stored output, after masking run ids, times, durations and ports
with notebooks/nbval_sanitize.cfg, each cell tagged `nbval-check-output`:
those whose output does not depend on the local model's floating point.
llama.cpp is compiled for the CPU it is built on, so its scores differ in
their last digits between machines (0.710 on one, 0.712 on another), and an
early stop may then come one evaluation sooner: a cell showing such figures
is executed, not compared, or the test would pass only on the machine that
recorded it. (tests/backends/test_local_model.py checks model figures with
a stated tolerance.) A `%%attribute` widget is redrawn in place when its
run ends, which nbval does not see: those cells are tagged
`nbval-ignore-output`.

The check runs in a subprocess, as CI would run it by hand: a cold call
cache and an empty runs folder (both temporary, so nothing is written to
the repository or to ~/.cache) and no OpenAI key, so openai_compatible.ipynb
uses its own llama-cpp-python server on 127.0.0.1 and never the network.
After changing a notebook or anything its outputs show, re-store them with
`python notebooks/execute_notebooks.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = NOTEBOOKS / "nbval_sanitize.cfg"
EXPECTED = {"quickstart.ipynb", "long_prompts.ipynb", "openai_compatible.ipynb"}


def test_notebooks_are_present_and_executed():
    nbformat = pytest.importorskip("nbformat", reason="needs nbformat (the test extra)")

    found = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert found >= EXPECTED, f"missing notebooks: {sorted(EXPECTED - found)}"
    for name in sorted(found):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        # nbval compares only cells that were run when the notebook was saved.
        unrun = [i for i, c in enumerate(code) if c.execution_count is None]
        assert not unrun, (
            f"{name}: code cells {unrun} have no stored outputs; run notebooks/execute_notebooks.py"
        )
        assert "widgets" in nb.metadata, f"{name}: no stored widget state (store_widget_state=True)"
        checked = [c for c in code if "nbval-check-output" in c.metadata.get("tags", [])]
        assert len(checked) >= len(code) // 3, f"{name}: too few cells have their outputs compared"
        for cell in code:
            for out in cell.outputs:
                assert out.output_type != "error", (
                    f"{name}: a stored output is an error: {out.get('evalue')}"
                )


def _code_cells() -> int:
    import nbformat

    return sum(
        sum(c.cell_type == "code" for c in nbformat.read(p, as_version=4).cells)
        for p in NOTEBOOKS.glob("*.ipynb")
    )


@pytest.mark.local
@pytest.mark.server
@pytest.mark.timeout(1800)
def test_notebooks_nbval(tmp_path):
    pytest.importorskip("nbval", reason="needs nbval (the test extra)")
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PYTEST_ADDOPTS")
    }
    env["PROMPT_ATTR_CACHE_DIR"] = str(tmp_path / "cache")
    env["PROMPT_ATTR_RUNS_DIR"] = str(tmp_path / "runs")
    cmd = [
        sys.executable, "-m", "pytest",
        "--nbval-lax", "notebooks/",  # compares only cells tagged nbval-check-output (see above)
        "--nbval-sanitize-with", str(SANITIZE.relative_to(ROOT)),
        "-p", "no:cacheprovider",
        "-p", "no:randomly",
        "-q",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    elapsed = time.monotonic() - start
    report = f"$ {' '.join(cmd)}  ({elapsed:.0f} s)\n{proc.stdout}\n{proc.stderr}"
    print(report)
    assert proc.returncode == 0, report
    # Every code cell of every notebook was collected and passed (none skipped).
    assert f"{_code_cells()} passed" in proc.stdout, report
    assert any((tmp_path / "runs").glob("*/run.json")), (
        "the notebooks saved no runs in PROMPT_ATTR_RUNS_DIR"
    )
