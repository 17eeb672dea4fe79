"""Shared Chromium + Playwright machinery for the front-end tests (a pytest plugin).

A standalone page imports the widget's ES module exactly as shipped
(`AttributionWidget._esm`) and calls its default export's `render({model, el})`
with a minimal JS model (get, set, on, off, save_changes) seeded from the
Python widget's synced state. Registered in conftest.py, so every browser
test module gets the same `browser`, `site` and `page` fixtures.

Debian's chromium (/usr/bin/chromium) is installed on first use when it is
missing (`install_chromium`). Skipped when it still cannot be had or the
playwright package is missing, except in CI (CI=true), where that fails
instead.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from prompt_attr_widget.views.widget import AttributionWidget, CompareWidget

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

HARNESS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>prompt_attr widget harness</title>
<link rel="stylesheet" href="widget.css">
<style>
  body { margin: 0; padding: 16px; background: #ffffff; }
  body.dark { background: #111111; }
  body.dark #wrap { --jp-layout-color0: #111; --jp-ui-font-color0: #eee;
                    --jp-layout-color2: #222; --jp-border-color1: #444; }
</style></head>
<body><div id="wrap"><div id="root"></div></div>
<script type="module" src="harness.js"></script>
</body></html>
"""

# A minimal anywidget model: attributes, change listeners, save_changes. `apply`
# behaves like Backbone's set of a comm update: set() every key, then trigger change:x.
HARNESS_JS = """
import widget from "./widget.js";

function makeModel(initial) {
  const attrs = { ...initial };
  const listeners = new Map();
  const model = {
    saved: [],
    get(name) { return attrs[name]; },
    set(name, value) { attrs[name] = value; },
    on(event, cb) {
      if (!listeners.has(event)) listeners.set(event, []);
      listeners.get(event).push(cb);
    },
    off(event, cb) {
      if (!listeners.has(event)) return;
      if (!cb) listeners.delete(event);
      else listeners.set(event, listeners.get(event).filter((f) => f !== cb));
    },
    save_changes() { model.saved.push(JSON.parse(JSON.stringify(attrs))); },
    trigger(event) { for (const cb of [...(listeners.get(event) || [])]) cb(); },
    apply(changes) {
      for (const [k, v] of Object.entries(changes)) model.set(k, v);
      for (const k of Object.keys(changes)) model.trigger("change:" + k);
    },
    listenerCount() { let n = 0; for (const l of listeners.values()) n += l.length; return n; },
  };
  return model;
}

function mountWith(widget, state) {
  if (window.__cleanup) window.__cleanup();
  const root = document.getElementById("root");
  root.replaceChildren();
  const el = document.createElement("div");
  root.appendChild(el);
  window.__model = makeModel(state);
  window.__cleanup = widget.render({ model: window.__model, el });
  return typeof window.__cleanup;
}

window.__mount = (state) => mountWith(widget, state);
window.__mountCompare = async (state) => mountWith((await import("./compare.js")).default, state);
window.__apply = (changes) => { window.__model.apply(changes); };
window.__harnessReady = true;
"""

# What the JS shows for the span a mouseenter/click/Enter picked.
READ_DETAIL_JS = """() => {
  const d = document.querySelector('.pa-detail');
  const head = d.querySelector('.pa-detail-head');
  const diff = d.querySelector('.pa-diff');
  const answer = diff ? [...diff.querySelectorAll('.pa-diff-same, .pa-diff-add')].map((n) => n.textContent).join('') : null;
  return { head: head ? head.textContent : null, quote: (d.querySelector('.pa-detail-span') || {}).textContent || null,
           diffText: diff ? diff.textContent : null, answer, hasDiffNodes: diff ? diff.children.length > 0 : false };
}"""

# Anything a payload could have planted: foreign elements, and any on* attribute anywhere.
FOREIGN_JS = """(scope) => {
  const root = document.querySelector(scope);
  const tags = [...new Set([...root.querySelectorAll('*')].map((n) => n.tagName.toLowerCase()))];
  const handlers = [...document.querySelectorAll('*')].flatMap((n) =>
    [...n.attributes].filter((a) => a.name.startsWith('on')).map((a) => `${n.tagName}[${a.name}]`));
  return { tags, handlers, pwned: typeof window.__pwned };
}"""

SPANS_JS = """() => [...document.querySelectorAll('#root .pa-span')].map((n) => ({
  index: Number(n.dataset.index), text: n.textContent, inline: n.style.backgroundColor,
  computed: getComputedStyle(n).backgroundColor, title: n.title, aria: n.getAttribute('aria-label'),
  selected: n.classList.contains('pa-selected'), pending: n.classList.contains('pa-pending'),
}))"""


@functools.cache
def install_chromium() -> str | None:
    """Install Debian's chromium when it is missing, once a session, so the README's test command
    runs the browser tests on a fresh machine; None when it is there, else why it is not.

    As root, or through `sudo -n` (never a password prompt). PROMPT_ATTR_NO_INSTALL=1 turns it off.
    """
    if Path(CHROMIUM).exists():
        return None
    if os.environ.get("PROMPT_ATTR_NO_INSTALL"):
        return f"{CHROMIUM} is missing (apt-get install chromium; PROMPT_ATTR_NO_INSTALL is set)"
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            done = subprocess.run(sudo + step, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{CHROMIUM} is missing and installing it failed ({' '.join(step)}: {exc})"
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split()[-30:])
            return f"{CHROMIUM} is missing and installing it failed ({' '.join(step)}: {tail})"
    return None if Path(CHROMIUM).exists() else f"{CHROMIUM} is still missing after apt-get install chromium"


def _browser_problem() -> str | None:
    problem = install_chromium()
    if problem:
        return problem
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is missing (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser():
    problem = _browser_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {problem}")
        pytest.skip(f"browser tests need Chromium and playwright: {problem}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The harness, the widget's ESM and CSS, served by a loopback http.server."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "widget.js").write_text(str(AttributionWidget._esm), "utf-8")
    (folder / "widget.css").write_text(str(AttributionWidget._css), "utf-8")
    (folder / "compare.js").write_text(str(CompareWidget._esm), "utf-8")
    (folder / "harness.js").write_text(HARNESS_JS, "utf-8")
    (folder / "index.html").write_text(HARNESS_HTML, "utf-8")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Page:
    """A harness page that records console errors and uncaught exceptions."""

    def __init__(self, browser, url, *, width=1100, height=760):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        self.page.goto(url)
        self.page.wait_for_function("window.__harnessReady === true", timeout=10_000)

    def mount(self, state: dict) -> None:
        assert self.page.evaluate("(s) => window.__mount(s)", state) == "function"

    def mount_compare(self, state: dict) -> None:
        assert self.page.evaluate("(s) => window.__mountCompare(s)", state) == "function"

    def apply(self, changes: dict) -> None:
        self.page.evaluate("(c) => window.__apply(c)", changes)

    def spans(self) -> list[dict]:
        return self.page.evaluate(SPANS_JS)

    def detail(self) -> dict:
        return self.page.evaluate(READ_DETAIL_JS)


@pytest.fixture
def page(browser, site):
    p = Page(browser, site)
    try:
        yield p
    finally:
        p.context.close()


def view_state(w: AttributionWidget) -> dict:
    """The synced traits a front-end model would hold, without ipywidgets' own keys."""
    state = w.get_state()
    state = {k: v for k, v in state.items() if not k.startswith("_") and k not in ("layout", "tabbable", "tooltip")}
    return json.loads(json.dumps(state))  # what crosses the wire: plain JSON


def empty_state() -> dict:
    return view_state(AttributionWidget())

