"""Errors a user can cause: each is a PromptAttrError with a sentence that says what to do."""

from __future__ import annotations

import re
import sys
import time

import pytest

import prompt_attr
from prompt_attr import (
    BackendError,
    BudgetRefused,
    MissingDependency,
    Price,
    PromptAttrError,
    UsageError,
)
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.text import usd

PROMPT = "It is late. The Blue Falcon landed. My cat slept."


def no_runs(runs_dir) -> bool:
    return not runs_dir.exists() or not any(runs_dir.iterdir())


def test_error_hierarchy_and_exit_codes():
    assert issubclass(UsageError, PromptAttrError) and issubclass(UsageError, ValueError)
    assert issubclass(MissingDependency, BackendError) and issubclass(BackendError, PromptAttrError)
    assert issubclass(prompt_attr.RunNotFound, LookupError)
    assert UsageError.exit_code == 2 and BudgetRefused.exit_code == 3 and PromptAttrError.exit_code == 1


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t\r\n"])
def test_empty_prompt(prompt, runs_dir, fake):
    with pytest.raises(UsageError, match="empty"):
        prompt_attr.attribute(prompt, backend=fake, runs_dir=runs_dir)
    assert fake.calls == 0 and no_runs(runs_dir)


@pytest.mark.parametrize("prompt", [None, b"bytes prompt", 42, ["a list"], {"role": "user"}])
def test_non_text_prompt(prompt, runs_dir, fake):
    with pytest.raises(UsageError, match="must be text"):
        prompt_attr.attribute(prompt, backend=fake, runs_dir=runs_dir)
    assert no_runs(runs_dir)


def test_unknown_model_name(runs_dir):
    with pytest.raises(UsageError) as info:
        prompt_attr.attribute(PROMPT, model="foo-bar-model", runs_dir=runs_dir)
    message = str(info.value)
    assert "foo-bar-model" in message and "'local'" in message and "--base-url" in message
    assert no_runs(runs_dir)


@pytest.mark.parametrize("model", [None, "local"])
def test_a_base_url_without_a_server_model_is_refused(model, runs_dir, capsys):
    """--base-url alone used to be ignored: the embedded model ran instead of the server."""
    from prompt_attr_widget.cli import main

    options = {} if model is None else {"model": model}
    with pytest.raises(UsageError) as info:
        prompt_attr.attribute(PROMPT, base_url="http://user:pw@127.0.0.1:9/v1", runs_dir=runs_dir, **options)
    message = str(info.value)
    assert "--model" in message and "127.0.0.1:9" in message and "pw" not in message
    assert no_runs(runs_dir)
    prompt_file = runs_dir.parent / "prompt.txt"
    prompt_file.write_text(PROMPT, "utf-8")
    args = ["run", str(prompt_file), "--base-url", "http://127.0.0.1:9/v1", "--runs-dir", str(runs_dir)]
    assert main(args + ([] if model is None else ["--model", model])) == 2
    err = capsys.readouterr().err
    assert "names a server" in err and "--model" in err and "Traceback" not in err


@pytest.mark.parametrize("model", ["", "   "])
def test_blank_model_name(model, runs_dir):
    with pytest.raises(UsageError, match="local"):
        prompt_attr.attribute(PROMPT, model=model, runs_dir=runs_dir)


def test_openai_prefix_needs_a_model_name(runs_dir):
    with pytest.raises(UsageError, match="openai:gpt-4o-mini"):
        prompt_attr.attribute(PROMPT, model="openai:", runs_dir=runs_dir)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "openai:gpt-4.1", "o3-mini"])
def test_openai_model_without_api_key(model, runs_dir):
    with pytest.raises(BackendError) as info:
        prompt_attr.attribute(PROMPT, model=model, runs_dir=runs_dir)
    message = str(info.value)
    assert "OPENAI_API_KEY" in message and "--model local" in message
    assert no_runs(runs_dir)


def test_api_key_never_reaches_the_run_or_the_error(runs_dir, monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    a = prompt_attr.attribute(
        PROMPT, model="x", base_url="http://127.0.0.1:9/v1", api_key=secret, timeout=2, max_retries=0, runs_dir=runs_dir,
        scorer="embedding",  # no log-probability probe: the run starts, and fails as a stored run
    )
    assert a.status == "failed"
    for name in ("run.json", "events.jsonl"):
        assert secret not in (a.path / name).read_text("utf-8")
    assert secret not in a.record.reason


def test_budget_below_the_projection(runs_dir):
    backend = FakeBackend(price=Price(input=10, output=30), embed_price=Price(input=1))
    with pytest.raises(BudgetRefused) as info:
        prompt_attr.attribute(PROMPT * 10, backend=backend, runs_dir=runs_dir, budget=0.0001)
    exc = info.value
    assert exc.projected_usd > exc.budget_usd == 0.0001
    assert usd(exc.projected_usd) in str(exc)  # the projected dollar figure, as shown
    assert f"${exc.projected_usd:.4f}" in str(exc)
    assert "--budget" in str(exc)
    assert backend.calls == 0 and no_runs(runs_dir)


@pytest.mark.parametrize(
    "options, where",
    [
        ({"frobnicate": 3}, "frobnicate"),
        ({"concurrency": 0}, "concurrency"),
        ({"method": "exhaustive"}, "method"),
        ({"segment": "chapter"}, "segment"),
        ({"budget": -1}, "budget"),
        ({"temperature": 5}, "temperature"),
        ({"group_fraction": 0}, "group_fraction"),
        ({"spans": "0-5"}, "spans"),
    ],
)
def test_bad_options(options, where, runs_dir, fake):
    with pytest.raises(UsageError, match="invalid option") as info:
        prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, **options)
    assert where in str(info.value)
    assert fake.calls == 0 and no_runs(runs_dir)


def test_bad_user_spans_through_attribute(runs_dir, fake):
    with pytest.raises(UsageError, match="outside the prompt"):
        prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, spans=[(0, 10_000)])
    with pytest.raises(UsageError, match="overlaps"):
        prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, spans=[(0, 10), (5, 15)])
    assert fake.calls == 0 and no_runs(runs_dir)
    ok = prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, spans=[(0, 11), (12, 35)])
    assert [s.text for s in ok.spans] == ["It is late.", "The Blue Falcon landed."]


def test_unreachable_server_fails_the_run_quickly(runs_dir):
    url = "http://127.0.0.1:9/v1"
    start = time.perf_counter()
    # The scorer is unknown until the server answers the log-probability probe: no run starts.
    with pytest.raises(BackendError, match=re.escape(f"could not reach {url}")) as info:
        prompt_attr.attribute(PROMPT, model="x", base_url=url, timeout=2, max_retries=0, runs_dir=runs_dir)
    assert "--base-url" in str(info.value) and info.value.transient and no_runs(runs_dir)
    a = prompt_attr.attribute(PROMPT, model="x", base_url=url, timeout=2, max_retries=0, runs_dir=runs_dir, scorer="embedding")
    assert time.perf_counter() - start < 10
    assert a.status == "failed"
    assert url in a.record.reason and "--base-url" in a.record.reason
    assert a.record.evaluations == [] and a.record.baseline is None
    loaded = prompt_attr.load_run(a.run_id, runs_dir=runs_dir)
    assert loaded.status == "failed" and loaded.record.reason == a.record.reason
    assert a.record.backend.base_url == url


def test_credentials_in_base_url_are_not_stored(runs_dir):
    a = prompt_attr.attribute(
        PROMPT, model="x", base_url="http://user:pw@127.0.0.1:9/v1?token=abc", timeout=2, max_retries=0, runs_dir=runs_dir,
        scorer="embedding",
    )
    assert a.status == "failed"
    assert a.record.backend.base_url == a.record.config["base_url"] == "http://127.0.0.1:9/v1"
    # Regression: the config in run.json and events.jsonl kept the URL's password and token.
    for name in ("run.json", "events.jsonl"):
        stored = (a.path / name).read_text("utf-8")
        assert "pw" not in stored and "token=abc" not in stored and "user:" not in stored
    assert "pw@" not in a.record.reason and "token=abc" not in a.record.reason


def test_local_model_without_llama_cpp(runs_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingDependency) as info:
        prompt_attr.attribute(PROMPT, model="local", runs_dir=runs_dir)
    assert "pip install 'prompt-attr[local]'" in str(info.value)
    assert no_runs(runs_dir)


def test_local_model_file_that_does_not_exist(runs_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    with pytest.raises(UsageError, match="no GGUF model file"):
        prompt_attr.attribute(PROMPT, model=f"local:{tmp_path / 'missing.gguf'}", runs_dir=runs_dir)


def test_load_run_errors(runs_dir):
    with pytest.raises(UsageError):
        prompt_attr.load_run("../../etc", runs_dir=runs_dir)
    with pytest.raises(prompt_attr.RunNotFound):
        prompt_attr.load_run("20261123T101500123Z-1a2b3c4d", runs_dir=runs_dir)
