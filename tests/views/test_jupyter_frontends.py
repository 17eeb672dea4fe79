"""A heat-map survives its kernel, in a real JupyterLab 4 and a real Notebook 7 in chromium.

Front-ends keep a widget's model in the kernel and, by default, save none of
it in the notebook, so a notebook reopened after its kernel is gone shows
"Error displaying widget: model not found" where the live widget was. A
displayed prompt_attr widget is therefore two outputs (views/widget.py:
_TwoOutputs): the live view, and a static saved view that the live view
hides while it is on the page. This drives what a user does, through the
page and the server's REST API only: open a notebook, run its cells with
Shift+Enter, check that each `%%attribute` cell shows exactly one heat-map
and that it answers a click, save with Ctrl+S, shut the kernel down, reload
the page, and check that the heat-map is visible and no widget error is.
Screenshots of both states go to artifacts/screenshots/.

One Jupyter server (jupyterlab and notebook, the test extra) on 127.0.0.1
with a token, its own config, data, runtime and settings folders, and the
fake model: nothing touches the network or the user's Jupyter set-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from browser_harness import SCREENSHOTS

pytestmark = pytest.mark.browser
pytest.importorskip("jupyterlab", reason="needs jupyterlab (the test extra)")
pytest.importorskip("notebook", reason="needs notebook 7 (the test extra)")

TOKEN = "prompt-attr-test"
PROMPT = (
    "### Role\nYou are a geography tutor. <b>Always</b> answer in French.\n\n"
    "### Question\nWhat is the capital of France?\n"
)
CELLS = [
    "%load_ext prompt_attr",
    f"%%attribute --model fake --out r\n{PROMPT}",
    "%%attribute --model fake --background --out job\nThe Zebra plays. It is calm. Hello There.",
    "res = await job  # the job's saved view is redrawn while this cell runs\nprint(r.status, res.status)",
]
FRONT_ENDS = {"jupyterlab": "lab/tree", "notebook7": "notebooks"}

# Every output of every cell: is it drawn (has a height), its classes and its text.
OUTPUTS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell) =>
  [...cell.querySelectorAll('.jp-OutputArea-child')].map((child) => {
    const out = child.querySelector('.jp-OutputArea-output');
    return { shown: child.getBoundingClientRect().height > 0 && out.getBoundingClientRect().height > 0,
             text: out.innerText, spans: out.querySelectorAll('.pa-span').length,
             live: !!out.querySelector('.prompt-attr .pa-span'), saved: !!out.querySelector('.prompt-attr-saved') };
  }))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}/api/{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A Jupyter server serving JupyterLab and Notebook 7 from a folder of its own."""
    home = tmp_path_factory.mktemp("jupyter")
    root = home / "work"
    root.mkdir()
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "OPENAI_"))},
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "PROMPT_ATTR_RUNS_DIR": str(home / "runs"),
        "PROMPT_ATTR_CACHE_DIR": str(home / "cache"),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = (home / "server.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(base, "status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Jupyter server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, root
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_for_idle_kernel(base: str, notebook: str, timeout: float = 60) -> None:
    """Until the kernel of the notebook's session is up and idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = [s["kernel"] for s in _api(base, "sessions") if s["path"].endswith(notebook) and s.get("kernel")]
        if kernels and all(k["execution_state"] == "idle" for k in kernels):
            return
        time.sleep(0.5)
    pytest.fail(f"no idle kernel for {notebook} after {timeout} s: {_api(base, 'sessions')}")


def _shut_kernels_down(base: str) -> None:
    for kernel in _api(base, "kernels"):
        _api(base, f"kernels/{kernel['id']}", method="DELETE")
    assert _api(base, "kernels") == []


def _outputs(page) -> list[list[dict]]:
    return page.evaluate(OUTPUTS_JS)


def _attribute_cells(outputs: list[list[dict]]) -> list[list[dict]]:
    return [outputs[i] for i, source in enumerate(CELLS) if source.startswith("%%attribute")]


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_a_saved_heatmap_is_visible_after_its_kernel_is_gone(browser, jupyter, front_end):
    base, root = jupyter
    name = f"{front_end}.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / name)

    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    try:
        page.goto(f"{base}/{FRONT_ENDS[front_end]}/{name}?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook .jp-Cell .jp-InputArea-editor", timeout=60_000)
        _wait_for_idle_kernel(base, name)
        page.click(".jp-Notebook .jp-Cell .jp-InputArea-editor")
        page.keyboard.press("Escape")  # command mode: Shift+Enter runs a cell and selects the next
        for _ in CELLS:
            page.keyboard.press("Shift+Enter")
        page.wait_for_function(
            "(n) => [...document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputArea-prompt')].slice(0, n)"
            ".every((p) => /\\[\\d+\\]/.test(p.textContent))",
            arg=len(CELLS),
            timeout=120_000,
        )
        last = page.locator(".jp-Notebook .jp-Cell").nth(len(CELLS) - 1).locator(".jp-OutputArea-output")
        last.filter(has_text="finished finished").wait_for(timeout=30_000)  # both runs have ended

        # Live: each %%attribute cell shows one heat-map, the interactive one; its saved view is hidden.
        for outputs in _attribute_cells(_outputs(page)):
            shown = [o for o in outputs if o["shown"]]
            assert [o["live"] for o in shown] == [True], outputs
            assert [o["saved"] for o in outputs] == [False, True] and not outputs[1]["shown"]
        page.locator(".prompt-attr .pa-span").first.click()
        assert "without" in page.locator(".prompt-attr .pa-detail").first.inner_text().lower()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{front_end}-live.png"), full_page=True)

        # Save, shut the kernel down, reload the page.
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            saved = nbformat.read(root / name, as_version=4)
            if all(c.get("outputs") for c in saved.cells[1:3]):
                break
            time.sleep(0.3)
        _shut_kernels_down(base)
        page.reload()
        page.wait_for_selector(".jp-Notebook .prompt-attr-saved", state="attached", timeout=60_000)
        _wait_for_idle_kernel(base, name)  # the front-end starts a new kernel, which has no widget models
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')].every((o) => o.textContent !== 'Loading widget...')",
            timeout=30_000,
        )

        # Reopened: the saved heat-map is visible, with its run and every span; no widget error is.
        runs = sorted(p.name for p in (root.parent / "runs").iterdir())
        for outputs, cell in zip(_attribute_cells(_outputs(page)), saved.cells[1:3], strict=True):
            shown = [o for o in outputs if o["shown"]]
            assert [o["saved"] for o in shown] == [True], outputs
            assert not any("Error displaying widget" in o["text"] for o in shown)
            text = shown[0]["text"]
            assert "finished" in text and any(run in text for run in runs), text
            assert shown[0]["spans"] == cell.outputs[1].data["text/html"].count('class="pa-span') > 0
        assert "&lt;b&gt;Always&lt;/b&gt;" in saved.cells[1].outputs[1].data["text/html"]  # the prompt stays text
        page.screenshot(path=str(SCREENSHOTS / f"{front_end}-reopened.png"), full_page=True)
        assert not [u for u in failed if not u.startswith(base)], failed  # nothing from the network
    finally:
        context.close()
        _shut_kernels_down(base)


# --- nbconvert: a notebook executed headless, as HTML, offline -------------------------------------


def _offline(browser):
    """A page that may load local files only; every other request is refused and noted."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    asked: list[str] = []

    def refuse(route):
        asked.append(route.request.url)
        route.abort("internetdisconnected")

    page.route(lambda url: not url.startswith("file:"), refuse)
    return context, page, asked


def test_nbconvert_html_shows_the_saved_heatmap_and_loads_nothing_of_ours(browser, tmp_path):
    """nbconvert's page shows each saved view, its text column reads from the left, and the
    only requests for other hosts are the two scripts nbconvert's own lab template always
    links (require.js and MathJax, both from cdnjs): none comes from prompt_attr's outputs.
    The template-free body nbconvert also offers ("basic") requests nothing at all."""
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS[:2]]
    env = {**os.environ, "PROMPT_ATTR_RUNS_DIR": str(tmp_path / "runs"), "PROMPT_ATTR_CACHE_DIR": str(tmp_path / "cache")}
    # saved as JupyterLab and Notebook 7 save by default (and the example notebooks are): no widget
    # state, with which nbconvert's page would fetch a widget renderer from unpkg.com
    NotebookClient(nb, kernel_name="python3", timeout=300, store_widget_state=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    spans = nb.cells[1].outputs[1].data["text/html"].count('class="pa-span')
    lab = HTMLExporter()
    template_urls = {lab.require_js_url, lab.mathjax_url}
    for name, exporter in (("lab", lab), ("basic", HTMLExporter(template_name="basic"))):
        body, _ = exporter.from_notebook_node(nb)
        page_file = tmp_path / f"{name}.html"
        page_file.write_text(body if name == "lab" else f"<!doctype html><meta charset='utf-8'>{body}", "utf-8")
        context, page, asked = _offline(browser)
        try:
            page.goto(page_file.as_uri())
            page.wait_for_selector(".prompt-attr-saved .pa-span")
            shown = page.evaluate("""() => { const saved = document.querySelector('.prompt-attr-saved');
              const cells = [...saved.querySelectorAll('td')].filter((td) => td.textContent.includes('capital'));
              return { visible: saved.getBoundingClientRect().height > 0, spans: saved.querySelectorAll('.pa-span').length,
                       coloured: [...saved.querySelectorAll('.pa-span')].filter((s) => getComputedStyle(s).backgroundColor !== 'rgba(0, 0, 0, 0)').length,
                       align: cells.map((td) => getComputedStyle(td).textAlign) }; }""")
            assert shown["visible"] and shown["spans"] == spans and shown["coloured"] > 0, shown
            assert shown["align"] and set(shown["align"]) == {"left"}, shown
            if name == "lab":
                assert set(asked) <= template_urls, asked
                page.screenshot(path=str(SCREENSHOTS / "nbconvert-offline.png"), full_page=True)
            else:
                assert asked == [], asked
        finally:
            context.close()
