"""The package's layers import only downward, and no module imports itself through others.

Every import is read from the source (function-level imports included, as
they are just as much a dependency), resolved to the module it names, and
checked against the layer order in README.md's design section:

    core  <-  stages, backends  <-  engine;   core <- store;   core, stages <- views

and on top the public surface (api, cli, magics), which may import anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "prompt_attr_widget"
LAYERS = ("core", "stages", "backends", "engine", "store", "views")
ALLOWED = {
    "core": {"core"},
    "stages": {"core", "stages"},
    "backends": {"core", "backends"},
    "engine": {"core", "stages", "backends", "engine"},
    "store": {"core", "store"},
    "views": {"core", "stages", "views"},
}
MAX_ROOT_MODULES = 8


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules `name` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import surrogate` names a module; `from .schema import Span` a name in one
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")}
    return found - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_import_reader_sees_function_level_and_relative_imports():
    """The checks below are only as good as this reader: prove it finds what matters."""
    assert "prompt_attr_widget.core.secrets" in GRAPH["prompt_attr_widget.core.config"]  # inside a validator
    assert "prompt_attr_widget.stages.surrogate" in GRAPH["prompt_attr_widget.stages.estimate"]  # from . import x
    assert "prompt_attr_widget.backends.resolve" in GRAPH["prompt_attr_widget.backends"]  # a package's __init__
    assert "prompt_attr_widget.api" in GRAPH["prompt_attr_widget.cli"]  # lazy, in a function


def test_every_module_is_in_a_layer_or_the_public_surface():
    root = sorted(m for m in MODULES if m.count(".") == 1 and _layer(m) is None)
    assert len(root) <= MAX_ROOT_MODULES, root
    for module in MODULES:
        parts = module.split(".")
        assert len(parts) <= 2 or parts[1] in LAYERS, f"{module} is in no layer"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_imports_go_only_downward(module):
    layer = _layer(module)
    wrong = sorted(t for t in GRAPH[module] if _layer(t) not in ALLOWED[layer])
    assert not wrong, f"{module} ({layer}) may import only {sorted(ALLOWED[layer])}, but imports {wrong}"


def test_no_import_cycle():
    """Tarjan's strongly connected components over the import graph: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(1000, 10 * len(MODULES)))
    for v in MODULES:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_would_catch_a_cycle(monkeypatch):
    """A planted back edge (core importing the engine) must be found by both checks."""
    monkeypatch.setitem(GRAPH, "prompt_attr_widget.core.config",
                        GRAPH["prompt_attr_widget.core.config"] | {"prompt_attr_widget.engine.run"})
    with pytest.raises(AssertionError, match="cycles"):
        test_no_import_cycle()
    with pytest.raises(AssertionError, match="may import only"):
        test_imports_go_only_downward("prompt_attr_widget.core.config")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    return set(out.split())


def test_import_prompt_attr_loads_no_engine_numpy_or_sdk():
    loaded = _loaded_after("import prompt_attr")
    heavy = {m for m in loaded if m.split(".")[0] in ("numpy", "openai", "aiolimiter", "anywidget")}
    assert not heavy, sorted(heavy)
    assert not {m for m in loaded if m.startswith((f"{PACKAGE}.engine", f"{PACKAGE}.stages.surrogate"))}


def test_validating_a_config_loads_nothing_but_core():
    loaded = _loaded_after("from prompt_attr_widget.core.config import AttributionConfig\n"
                           "AttributionConfig.build(model='local', redact=True, redact_patterns=['x+'])")
    ours = {m for m in loaded if m.startswith(PACKAGE)}
    assert all(_layer(m) == "core" for m in ours - {PACKAGE}), sorted(ours)
    assert "numpy" not in loaded and "aiolimiter" not in loaded


def test_prompt_attr_ls_imports_no_engine(tmp_path):
    loaded = _loaded_after(
        "import contextlib, io\nfrom prompt_attr_widget.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['ls', '--runs-dir', {str(tmp_path)!r}]) == 0"
    )
    heavy = {m for m in loaded if m.startswith(f"{PACKAGE}.engine") or m.split(".")[0] in ("numpy", "openai", "aiolimiter")}
    assert not heavy, sorted(heavy)
