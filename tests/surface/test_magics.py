"""The IPython magics: %%attribute, %attribute_runs, %attribute_show, in a shell and in real kernels.

In an InteractiveShell every mistake a user can make must come back as one
UsageError line, never a traceback. Notebooks are built here with nbformat
and executed by nbclient in a fresh python3 kernel (ipykernel).
"""

from __future__ import annotations

import os
import re
import sys

import nbformat
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient

import prompt_attr
from prompt_attr import Attribution
from prompt_attr_widget.views.widget import AttributionWidget


def answers(outputs: dict) -> dict:
    """The ablated answers in a widget's `outputs`: word diffs against the baseline whose
    equal and insert pieces join to the answer."""
    return {k: None if ops is None else "".join(text for op, text in ops if op != "delete") for k, ops in outputs.items()}


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROMPT = "You are a Tutor for Paris trips. <script>alert(1)</script> it is calm.\nAlways Answer In French.\nWhat is the Capital of France?"


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "prompt_attr")
    assert "attribute" in sh.magics_manager.magics["cell"]
    assert {"attribute_runs", "attribute_show"} <= set(sh.magics_manager.magics["line"])
    return sh


def run_ok(shell, cell: str):
    result = shell.run_cell(cell)
    assert result.success, result.error_in_exec or result.error_before_exec
    return result


def usage_error(shell, capsys, cell: str) -> str:
    """Run a cell that must fail with one UsageError line and no traceback; return the message."""
    capsys.readouterr()
    result = shell.run_cell(cell)
    out, err = capsys.readouterr()
    assert not result.success
    error = result.error_in_exec or result.error_before_exec
    assert isinstance(error, UsageError), repr(error)
    assert "Traceback" not in out + err
    # what displaying the widget prints in a terminal: its live view's text (none), its summary
    lines = [line for line in (out + err).splitlines() if line.strip() and not line.startswith("AttributionWidget(")]
    assert lines == [f"UsageError: {error}"], lines
    assert "\n" not in str(error)
    return str(error)


# --- in an InteractiveShell -----------------------------------------------------------------------


def test_attribute_binds_a_finished_attribution(shell, runs_dir):
    shell.user_ns.pop("r", None)
    run_ok(shell, f"%%attribute --model fake --out r\n{PROMPT}\n")
    r = shell.user_ns["r"]
    assert isinstance(r, Attribution) and r.status == "finished"
    assert r.record.prompt == PROMPT + "\n"
    assert r.baseline == "You Tutor Paris Always Answer French What Capital France"
    assert prompt_attr.load_run(r.run_id, runs_dir=runs_dir) == r  # saved in $PROMPT_ATTR_RUNS_DIR


def test_options_reach_the_run(shell, runs_dir):
    run_ok(shell, f"%%attribute --model fake --method loo --segment line --max-tokens 3 --concurrency 2 --no-cache --system 'Be Brief' --out r\n{PROMPT}")
    r = shell.user_ns["r"]
    config = r.record.config
    assert (config["method"], config["segment"], config["max_tokens"], config["concurrency"], config["cache"]) == ("loo", "line", 3, 2, False)
    assert r.record.system == "Be Brief" and len(r.spans) == 3
    assert r.baseline == "Brief You Tutor"  # the system message is sent too; max 3 words


def test_tag_and_runs_dir_reach_the_run(shell, tmp_path):
    # --tag was passed to the config, which has no such option: "invalid option: tags"
    folder = tmp_path / "tagged"
    run_ok(shell, f"%%attribute --model fake --tag baseline --label v2 --runs-dir {folder} --out r\n{PROMPT}")
    r = shell.user_ns["r"]
    assert r.status == "finished" and r.record.config["label"] == "v2"
    assert [(s.run_id, s.tags) for s in prompt_attr.list_runs(folder)] == [(r.run_id, ["baseline"])]


def test_target_and_surrogate_options(shell, runs_dir):
    run_ok(shell, f"%%attribute --model fake:logprob --segment line --method surrogate --masks 16 --target 'Paris' --out r\n{PROMPT}")
    r = shell.user_ns["r"]
    assert r.record.scorer == "logprob" and r.record.target.text == "Paris"
    assert r.record.surrogate.masks <= 16 and r.method == "surrogate"
    assert "Paris" in r.spans[r.top(1)[0].index].text and r.top(1)[0].significant


def test_runs_dir_option(shell, tmp_path):
    elsewhere = tmp_path / "else where"
    run_ok(shell, f"%%attribute --model fake --runs-dir '{elsewhere}' --out r\nThe Owl Sings.")
    assert [s.run_id for s in prompt_attr.list_runs(elsewhere)] == [shell.user_ns["r"].run_id]


@pytest.mark.parametrize(
    "cell, message",
    [
        ("%%attribute --model fake\n", "cell body is empty"),
        ("%%attribute --model fake\n   \n\t\n", "the cell is empty"),
        ("%%attribute --model fake --bogus\nHello There", "unrecognized arguments: --bogus"),
        ("%%attribute --model fake --system 'unclosed\nHello There", "No closing quotation"),
        ("%%attribute --model fake --segment words\nHello There", "invalid choice: 'words'"),
        ("%%attribute --model fake --budget lots\nHello There", "invalid float value: 'lots'"),
        ("%%attribute --model fake --out 1r\nHello There", "--out '1r' is not a valid Python variable name"),
        ("%%attribute --model fake --out class\nHello There", "--out 'class' is not a valid Python variable name"),
        ("%%attribute --model fake --out a.b\nHello There", "is not a valid Python variable name"),
        ("%%attribute --model no-such-model\nHello There", "unknown model 'no-such-model'"),
        ("%%attribute --model fake --concurrency 0\nHello There", "concurrency"),
        ("%%attribute --model fake --method random\nHello There", "invalid choice: 'random'"),
        ("%%attribute --model fake --target-range 5\nHello There", "--target-range '5' must be START:END"),
        ("%%attribute --model fake --scorer logprob\nHello There", "cannot score a given answer's log-probability"),
        ("%%attribute --model fake --price-in 100000 --budget 0.000001\nHello There. It is calm.", "refused: this run is projected to cost about"),
        ("%%attribute --model fake --format\nHello {nobody_defined_this}", "{nobody_defined_this} is not a variable"),
        ("%%attribute --model fake --format\nHello {", "cannot fill the placeholders"),
        ("%attribute_show ../../etc/passwd", "'../../etc/passwd' is not a run id"),
        ("%attribute_show 20250101T000000000Z-deadbeef", "no run 20250101T000000000Z-deadbeef"),
        ("%attribute_show", "usage: %attribute_show RUN_ID"),
        ("%attribute_show a b c", "usage: %attribute_show RUN_ID"),
    ],
)
def test_bad_input_is_one_usage_error_line(shell, capsys, runs_dir, cell, message):
    shell.user_ns.pop("r", None)
    assert message in usage_error(shell, capsys, cell)
    assert "r" not in shell.user_ns
    assert prompt_attr.list_runs(runs_dir) == [], "a refused cell must not start a run"


def test_budget_without_a_price_is_one_line(shell, capsys, runs_dir):
    # --scorer embedding: no log-probability probe, so not one call is made before the refusal
    cell = "%%attribute --model my-model --base-url http://127.0.0.1:9/v1 --scorer embedding --budget 0.01\nHello There"
    text = usage_error(shell, capsys, cell)
    assert "no known price" in text


def test_format_fills_placeholders(shell, runs_dir):
    shell.user_ns["name"] = "Alice Wonderland"
    shell.user_ns["topic"] = "Tea Parties"
    run_ok(shell, "%%attribute --model fake --format --out r\nTell {name} about {topic}. Keep {{braces}} literal.")
    r = shell.user_ns["r"]
    assert r.record.prompt.rstrip("\n") == "Tell Alice Wonderland about Tea Parties. Keep {braces} literal."
    assert r.baseline == "Tell Alice Wonderland Tea Parties Keep"
    # without --format the braces stay as they are
    run_ok(shell, "%%attribute --model fake --out r\nTell {name} about it.")
    assert shell.user_ns["r"].record.prompt.rstrip("\n") == "Tell {name} about it."


def test_runs_and_show(shell, runs_dir):
    run_ok(shell, "%%attribute --model fake --out r\nThe Zebra plays. It is calm. Hello There.")
    r = shell.user_ns["r"]
    table = shell.run_line_magic("attribute_runs", "")
    assert r.run_id in repr(table) and "finished" in repr(table)
    assert f"<td>{r.run_id}</td>" in table._repr_html_()
    assert r.run_id in repr(shell.run_line_magic("attribute_runs", str(runs_dir)))
    for ref in (r.run_id, r.run_id[:12], "latest"):
        w = shell.run_line_magic("attribute_show", ref)
        assert isinstance(w, AttributionWidget)
        assert w.scores == [round(s.score, 6) for s in r.spans]
        assert w.header["run_id"] == r.run_id and w.header["status"] == "finished"
        assert answers(w.outputs) == {str(e.id): e.output for e in r.record.evaluations}
    w = shell.run_line_magic("attribute_show", f"{r.run_id} {runs_dir}")
    assert w.header["run_id"] == r.run_id


def test_runs_on_an_empty_folder(shell, tmp_path):
    table = shell.run_line_magic("attribute_runs", str(tmp_path / "none"))
    assert repr(table) == "no runs yet" and "no runs yet" in table._repr_html_()


def test_run_table_escapes_html(shell, runs_dir):
    run_ok(shell, "%%attribute --model fake --out r\n<b>Bold</b> Claim here. it is calm.")
    html = shell.run_line_magic("attribute_runs", "")._repr_html_()
    assert "<b>" not in html and "&lt;b&gt;Bold&lt;/b&gt;" in html


def test_run_table_neutralises_bidi_and_escapes(shell, runs_dir):
    """A top span holding a bidi override or an escape sequence cannot reorder or recolour the table."""
    run_ok(shell, "%%attribute --model fake --out r\nSave it as User\u202eexe.txt now. Clear \x1b[2J Screen. it is calm.")
    table = shell.run_line_magic("attribute_runs", "")
    html = table._repr_html_()
    assert 'class="pa-bidi"' in html and "\x1b" not in html
    assert "\u202e" not in repr(table) and "\x1b" not in repr(table)


def test_help_lists_every_option_and_an_example(shell, capsys):
    doc = shell.find_cell_magic("attribute").__doc__
    for option in ("--model", "--base-url", "--segment", "--method", "--budget", "--concurrency", "--max-tokens",
                   "--system", "--no-cache", "--runs-dir", "--out", "--background", "--format"):
        assert re.search(rf"^\s+{re.escape(option)}\b", doc, re.M), f"{option} is not described"
    assert "Examples" in doc and re.search(r"^%%attribute --model local$", doc, re.M)
    assert "await job" in doc
    # the usage line shows the cell magic's own spelling
    assert re.search(r"^\s+%%attribute \[--model MODEL\]", doc, re.M), doc.splitlines()[:4]
    assert "%%%" not in doc
    # what `%%attribute?` prints
    capsys.readouterr()
    shell.run_cell("%%attribute?")
    out = capsys.readouterr().out
    assert "--background" in out and "Examples" in out
    for name in ("attribute_runs", "attribute_show"):
        assert shell.find_line_magic(name).__doc__.strip()


def test_local_model_without_the_local_extra(shell, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    text = usage_error(shell, capsys, "%%attribute --model local\nHello There")
    assert "install the local extra" in text and "pip install 'prompt-attr[local]'" in text


def test_background_needs_a_running_loop(shell, capsys):
    text = usage_error(shell, capsys, "%%attribute --model fake --background --out job\nHello There")
    assert "--background needs a running event loop" in text


# --- in real kernels (nbclient) ---------------------------------------------------------------------


def execute(cells: list[str], tmp_path, timeout=600):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    env = dict(os.environ)
    env["PROMPT_ATTR_RUNS_DIR"] = str(tmp_path / "kernel-runs")
    env["PROMPT_ATTR_CACHE_DIR"] = str(tmp_path / "kernel-cache")
    env.pop("CI", None)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=timeout, store_widget_state=True, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env)
    return nb, tmp_path / "kernel-runs"


def _view_key(nb, live) -> str:
    return nb.metadata["widgets"][WIDGET_STATE]["state"][live[WIDGET_VIEW]["model_id"]]["state"]["view_key"]


def check_attribute_notebook(nb, runs):
    outputs = nb.cells[1].outputs
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Traceback" in o.text]
    shown = [o for o in outputs if o.output_type in ("display_data", "execute_result")]
    # the live view, then its saved view: what the notebook shows once its kernel is gone
    assert len(shown) == 2, outputs
    live, data = shown[0].data, shown[1].data
    assert set(live) == {WIDGET_VIEW, "text/plain"} and set(data) == {"text/html", "text/plain"}
    assert f'data-prompt-attr-view="{_view_key(nb, live)}"' in data["text/html"]

    [summary] = prompt_attr.list_runs(runs)
    run = prompt_attr.load_run(summary.run_id, runs_dir=runs)
    assert run.status == "finished"
    # text/plain: the stable summary; text/html: the static heat-map, prompt escaped
    assert data["text/plain"].startswith(f"AttributionWidget(finished, {len(run.spans)} spans, {len(run.record.evaluations)} evaluations")
    assert "0x" not in data["text/plain"]
    html = data["text/html"]
    assert run.run_id in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert html.count('class="pa-span') == len(run.spans)
    # the saved widget state is the final state of the run on disk
    model_id = live[WIDGET_VIEW]["model_id"]
    state = nb.metadata["widgets"][WIDGET_STATE]["state"][model_id]
    assert state["model_name"] == "AnyModel"
    s = state["state"]
    assert s["scores"] == [round(x.score, 6) for x in run.spans]
    assert s["resolved"] == [x.resolved for x in run.spans]
    assert answers(s["outputs"]) == {str(e.id): e.output for e in run.record.evaluations}
    assert s["header"]["run_id"] == run.run_id and s["header"]["status"] == "finished"
    assert s["baseline"] == run.baseline
    assert "".join(p["pre"] + p["text"] for p in s["spans"]) + s["tail"] == run.record.prompt
    assert "export default" in s["_esm"] and ".prompt-attr" in s["_css"]
    # and the notebook is valid and round-trips through nbformat
    nbformat.validate(nb)
    return run


def test_notebook_fake_model(tmp_path):
    nb, runs = execute(["%load_ext prompt_attr", f"%%attribute --model fake --max-tokens 24\n{PROMPT}"], tmp_path)
    run = check_attribute_notebook(nb, runs)
    assert run.record.backend.model == "fake"


@pytest.mark.local
def test_notebook_local_model(tmp_path):
    nb, runs = execute(["%load_ext prompt_attr", f"%%attribute --model local --max-tokens 24\n{PROMPT}"], tmp_path)
    run = check_attribute_notebook(nb, runs)
    assert run.record.backend.backend == "local" and run.record.config["max_tokens"] == 24


def test_notebook_background_job(tmp_path):
    nb, runs = execute(
        [
            "%load_ext prompt_attr",
            "%%attribute --model fake --background --out job\nThe Zebra plays. It is calm. Hello There.",
            "res = await job\nprint(res.status)\nprint(type(job).__name__, job.header['status'], res.run_id)",
        ],
        tmp_path,
    )
    live, saved = [o.data for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert WIDGET_VIEW in live and "text/html" not in live
    # the saved view was redrawn when the job ended, after its cell had finished
    assert "AttributionWidget(finished" in saved["text/plain"] and "<table>" in saved["text/html"]
    [out] = [o for o in nb.cells[2].outputs if o.output_type == "stream"]
    status, line = out.text.splitlines()
    assert status == "finished"
    [summary] = prompt_attr.list_runs(runs)
    assert line == f"AttributionWidget finished {summary.run_id}"


def test_the_line_magic_takes_a_variable_or_a_file_and_shows_its_help(shell, capsys, runs_dir, tmp_path):
    assert "attribute" in shell.magics_manager.magics["line"]
    shell.user_ns.update(my_prompt=PROMPT, not_text=42)
    shell.user_ns.pop("r", None)
    run_ok(shell, "%attribute --model fake --out r my_prompt")
    assert shell.user_ns["r"].record.prompt == PROMPT and shell.user_ns["r"].status == "finished"
    path = tmp_path / "prompt.md"
    path.write_text(PROMPT, "utf-8")
    run_ok(shell, f"%attribute --model fake --method loo --out r {path}")
    assert shell.user_ns["r"].record.prompt == PROMPT and shell.user_ns["r"].record.config["method"] == "loo"
    assert "usage: %attribute [options] FILE_OR_VARIABLE" in usage_error(shell, capsys, "%attribute --model fake")
    assert "is of type int, not text" in usage_error(shell, capsys, "%attribute --model fake not_text")
    assert "neither a variable of this notebook nor a file" in usage_error(shell, capsys, "%attribute --model fake nope.md")
    assert "with %%attribute the prompt is the cell" in usage_error(shell, capsys, "%%attribute --model fake x\nHello There")
    capsys.readouterr()
    shell.run_cell("%attribute?")  # what the README says lists every option
    out = capsys.readouterr().out
    assert "--background" in out and "Examples" in out and "%attribute --model local prompt.md" in out
