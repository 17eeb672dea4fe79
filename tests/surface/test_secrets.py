"""Secrets: where prompts may go, what a saved run keeps, and that the API key leaks nowhere.

Three parts: the endpoint policy (plain http only to this machine unless
allowed), redaction (`redact=True` masks secrets in everything stored, at
the same offsets), and a canary API key that must appear in no file,
output, log record, widget state, exception or repr, for runs that succeed
and runs that fail (401, 500, an unreachable port).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import openai._base_client as openai_client
import pytest
from fault_server import serve
from test_magics import shell, usage_error  # noqa: F401 - the shell fixture is used by name

import prompt_attr
from prompt_attr import UsageError
from prompt_attr_widget import cli
from prompt_attr_widget.backends.endpoint import check_endpoint
from prompt_attr_widget.backends.fake import FakeBackend
from prompt_attr_widget.core.identity import public_url
from prompt_attr_widget.core.schema import Call, RunRecord
from prompt_attr_widget.core.secrets import compile_patterns, find_secrets, mask
from prompt_attr_widget.store.runs import replay_events
from prompt_attr_widget.views.widget import AttributionWidget

HTTP_LIB = getattr(openai_client, "httpx2", None) or openai_client.httpx  # the SDK's HTTP library
PROMPT = "It is late. The Blue Falcon landed. My cat slept."


def written(root: Path) -> dict[str, bytes]:
    """Every file under `root` (runs folder, cache folder) by path."""
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leaks(root: Path, *needles: str) -> list[str]:
    """The files under `root` holding any of `needles`."""
    return [path for path, data in written(root).items() if any(n.encode() in data for n in needles)]


@pytest.fixture
def requests_sent(monkeypatch):
    """Every HTTP request the OpenAI SDK tries to send; none leaves: each fails as refused."""
    sent = []

    async def spy(self, request, **kwargs):
        sent.append(str(request.url))
        raise HTTP_LIB.ConnectError("blocked by the test", request=request)

    monkeypatch.setattr(openai_client.AsyncHttpxClientWrapper, "send", spy)
    return sent


@pytest.fixture
def fast_retries(monkeypatch):
    """The SDK's retry back-off in milliseconds, not seconds (the CLI keeps its default two retries)."""
    monkeypatch.setattr(openai_client, "INITIAL_RETRY_DELAY", 0.001, raising=False)


# --- endpoint policy ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "url",
    [None, "https://10.0.0.5/v1", "https://api.example.com/v1", "http://127.0.0.1:8000/v1", "http://127.8.9.10/v1",
     "http://[::1]:8000/v1", "http://localhost:8000/v1", "http://LocalHost/v1", "http://[::ffff:127.0.0.1]/v1"],
)
def test_allowed_endpoints(url):
    check_endpoint(url)


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://10.0.0.5/v1", "plain http"),
        ("http://alice:s3cretpw@10.0.0.5:8000/v1?token=tok", "plain http"),
        ("http://api.example.com/v1", "plain http"),
        ("http://127.0.0.1.example.com/v1", "plain http"),  # a name that only looks like loopback
        ("http://localhost.example.com/v1", "plain http"),
        ("http://[fe80::1]/v1", "plain http"),
        ("ftp://alice:s3cretpw@127.0.0.1/v1", "https://"),
        ("file:///etc/passwd", "https://"),
        ("localhost:8000/v1", "https://"),  # no scheme: urlsplit reads "localhost" as one
        ("http:///v1", "no host"),
        ("http://[::1/v1", "not a valid URL"),
    ],
)
def test_refused_endpoints(url, why):
    with pytest.raises(UsageError, match=why) as info:
        check_endpoint(url)
    message = str(info.value)
    assert "s3cretpw" not in message and "alice" not in message and "token=" not in message
    if why == "plain http":
        assert public_url(url) in message and "https://" in message and "--allow-insecure" in message


def test_allow_insecure_lifts_only_the_http_rule():
    check_endpoint("http://10.0.0.5/v1", allow_insecure=True)
    with pytest.raises(UsageError, match="https://"):
        check_endpoint("ftp://10.0.0.5/v1", allow_insecure=True)


def test_api_refuses_remote_http_before_any_call(runs_dir, requests_sent):
    with pytest.raises(UsageError, match="--allow-insecure") as info:
        prompt_attr.attribute(PROMPT, model="x", base_url="http://alice:s3cretpw@10.0.0.5/v1", api_key="k", runs_dir=runs_dir)
    assert "s3cretpw" not in str(info.value) and "http://10.0.0.5/v1" in str(info.value)
    assert requests_sent == [] and not runs_dir.exists()
    with pytest.raises(UsageError, match="https://"):
        prompt_attr.attribute(PROMPT, model="x", base_url="ftp://10.0.0.5/v1", runs_dir=runs_dir)


def test_openai_base_url_from_the_environment_is_checked_too(runs_dir, monkeypatch, requests_sent):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://10.0.0.5/v1")
    with pytest.raises(UsageError, match="plain http"):
        prompt_attr.attribute(PROMPT, model="gpt-4o-mini", api_key="k", runs_dir=runs_dir)
    assert requests_sent == []


def test_allow_insecure_sends_and_is_recorded(runs_dir, requests_sent):
    url = "http://10.0.0.5:8000/v1"
    a = prompt_attr.attribute(PROMPT, model="x", base_url=url, allow_insecure=True, max_retries=0, runs_dir=runs_dir,
                              scorer="embedding")  # no log-prob probe: the baseline call fails the run
    assert a.status == "failed" and f"could not reach {url}" in a.record.reason
    assert requests_sent and all(r.startswith(url) for r in requests_sent)
    assert a.record.config["allow_insecure"] is True


def test_loopback_http_is_allowed(runs_dir):
    with serve() as server:
        a = prompt_attr.attribute(PROMPT, model="srv", base_url=server.url, runs_dir=runs_dir, faithfulness="off")
        localhost = server.url.replace("127.0.0.1", "localhost")
        b = prompt_attr.attribute(PROMPT, model="srv", base_url=localhost, runs_dir=runs_dir, faithfulness="off")
    assert a.status == b.status == "finished"


def test_cli_refuses_remote_http_with_exit_code_2(tmp_path, capsys, requests_sent):
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    code = cli.main(["run", str(prompt), "--model", "x", "--base-url", "http://u:secretpw@10.0.0.5/v1"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and requests_sent == []
    assert err.startswith("prompt-attr: refusing") and err.count("\n") == 1 and "secretpw" not in err
    assert "--allow-insecure" in err


def test_cli_allow_insecure_reaches_the_network(tmp_path, capsys, requests_sent, fast_retries):
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    code = cli.main(["run", str(prompt), "--model", "x", "--base-url", "http://10.0.0.5/v1", "--allow-insecure",
                     "--scorer", "embedding"])
    assert code == 1 and requests_sent
    assert "could not reach http://10.0.0.5/v1" in capsys.readouterr().out


def test_magic_refuses_remote_http_in_one_line(shell, capsys, runs_dir, requests_sent):  # noqa: F811
    message = usage_error(shell, capsys, "%%attribute --model x --base-url http://u:pw@10.0.0.5/v1\nWhat is up?")
    assert "plain http" in message and "--allow-insecure" in message and "u:pw" not in message
    assert requests_sent == [] and not runs_dir.exists()


# --- redaction: the pieces ------------------------------------------------------------------------

KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8t"
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
EMAIL = "ada.lovelace@example.org"
AWS = "AKIAIOSFODNN7EXAMPLE"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    "text, kind, secret",
    [
        (f"key: {KEY} here", "openai_key", KEY),
        ("old key sk-" + "a" * 40, "openai_key", "sk-" + "a" * 40),
        (f"Authorization: Bearer {BEARER}", "bearer_token", BEARER),
        (f"aws {AWS} id", "aws_access_key_id", AWS),
        ("ghp_" + "x" * 36, "github_token", "ghp_" + "x" * 36),
        ("github_pat_" + "A1_" * 9, "github_token", "github_pat_" + "A1_" * 9),
        ("slack xoxb-1234-5678-abcdefgh", "slack_token", "xoxb-1234-5678-abcdefgh"),
        ("api_key=abc123def", "credential", "abc123def"),
        ('"password": "hunter2",', "credential", "hunter2"),
        ("PASSWORD : correct-horse", "credential", "correct-horse"),
        (f"mail {EMAIL}.", "email", EMAIL),
        (f"x\n{PEM}\ny", "private_key", PEM),
    ],
)
def test_builtin_patterns(text, kind, secret):
    found = find_secrets(text, compile_patterns())
    assert [(f.kind, text[f.start : f.end]) for f in found] == [(kind, secret)]
    masked = mask(text, found)
    assert secret not in masked and len(masked) == len(text)
    assert masked.replace(masked[found[0].start : found[0].end], secret) == text  # only the secret changed


@pytest.mark.parametrize("text", ["The Blue Falcon landed at 10:45.", "skip-this sk-short", "a@b", "Bearer of bad news"])
def test_ordinary_text_is_left_alone(text):
    assert find_secrets(text, compile_patterns()) == []


def test_masks_are_same_length_keep_line_breaks_and_label_long_secrets():
    patterns = compile_patterns()
    assert mask(PEM, find_secrets(PEM, patterns)).startswith("[REDACTED]****")
    assert mask(PEM, find_secrets(PEM, patterns)).count("\n") == PEM.count("\n")
    assert mask("pwd=abc;", find_secrets("pwd=abc;", patterns)) == "pwd=***;"  # shorter than the label


@pytest.mark.parametrize("text", ["a." * 100_000, "-----BEGIN RSA PRIVATE KEY-----\n" * 3000 + "x" * 100_000,
                                  "a@" * 100_000, "password" + " " * 100_000])
def test_patterns_take_linear_time_on_hostile_text(text):
    """A long prompt (a pasted log, a data dump) must not stall the run in regex backtracking."""
    start = time.perf_counter()
    find_secrets(text, compile_patterns())
    assert time.perf_counter() - start < 3  # quadratic patterns took minutes on these


def test_overlapping_matches_merge():
    text = f"api_key={KEY}"  # both the credential and the openai_key pattern match the key
    found = find_secrets(text, compile_patterns())
    assert len(found) == 1 and text[found[0].start : found[0].end] == KEY


def test_bad_user_pattern_is_a_usage_error_naming_it(runs_dir, fake):
    with pytest.raises(UsageError, match="invalid option.*'badone'.*not a valid regular expression"):
        prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, redact=True, redact_patterns={"badone": "a(b"})
    with pytest.raises(UsageError, match="only apply with redact=True"):
        prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, redact_patterns=["Falcon"])
    assert fake.calls == 0 and not runs_dir.exists()


def test_schema_stays_backward_compatible():
    assert "redactions" not in Call(output="x").model_dump()  # unredacted runs store what they always did
    old = {"run_id": "r", "created_at": "t", "library_version": "0", "prompt": "p", "prompt_sha256": "h",
           "config": {}, "backend": {"backend": "fake", "model": "m", "embed_model": "e"}, "spans": [],
           "baseline": {"output": "o"}}
    record = RunRecord.model_validate(old)
    assert record.redacted is False and record.reproducible is True and record.baseline.redactions == []


# --- redaction: a whole run -----------------------------------------------------------------------

SECRET_PROMPT = (
    "# Setup\nUse the key " + KEY + " for the API. Send the header Authorization: Bearer " + BEARER + ".\n\n"
    "# Contact\nWrite to " + EMAIL + " if it breaks. The access key is " + AWS + ".\n\n"
    "# Task\nSay which Blue Falcon landed.\n"
)
PROMPT_SECRETS = (KEY, BEARER, EMAIL, AWS)


class EchoBackend(FakeBackend):
    """Answers with the whole prompt it was sent, so every answer echoes its secrets; records the prompts."""

    def __init__(self):
        super().__init__()
        self.prompts: list[str] = []

    async def complete(self, messages, params):
        done = await super().complete(messages, params)
        self.prompts.append(messages[-1]["content"])
        return dataclasses.replace(done, text="I was told: " + messages[-1]["content"])


def test_redacted_run_stores_no_secret_at_valid_offsets(tmp_path, runs_dir):
    backend, events = EchoBackend(), []
    system = f"Admin contact: {EMAIL}"
    a = prompt_attr.attribute(SECRET_PROMPT, backend=backend, runs_dir=runs_dir, redact=True, system=system,
                              segment="sentence", target="Blue Falcon", on_event=events.append)
    assert a.status == "finished"
    assert any(all(s in p for s in PROMPT_SECRETS) for p in backend.prompts)  # the model got the real prompt
    assert leaks(tmp_path, *PROMPT_SECRETS) == []  # runs folder and cache folder
    stored = json.loads((a.path / "run.json").read_text("utf-8"))
    replayed = replay_events(a.path)
    for record in (RunRecord.model_validate(stored), replayed, prompt_attr.load_run(a.run_id, runs_dir).record):
        assert len(record.prompt) == len(SECRET_PROMPT) and not any(s in record.prompt for s in PROMPT_SECRETS)
        assert all(s.text == record.prompt[s.start : s.end] for s in record.spans)
        assert record.redacted and not record.reproducible and "not the prompt" in record.not_reproducible_because
        assert EMAIL not in record.system and len(record.system) == len(system)
        assert {(r.field, r.kind) for r in record.redactions} == {
            ("prompt", "openai_key"), ("prompt", "bearer_token"), ("prompt", "email"),
            ("prompt", "aws_access_key_id"), ("system", "email")}
        assert all(record.prompt[r.start : r.end].startswith("[REDACTED]") for r in record.redactions if r.field == "prompt")
        assert record.target.text == record.baseline.output[record.target.start : record.target.end] == "Blue Falcon"
        assert record.baseline.redactions and any(e.redactions for e in record.evaluations)
        assert record.prompt_sha256 == a.record.prompt_sha256
    assert any("redacted" in note for note in a.notes())
    shown = [json.dumps(e.model_dump(mode="json")) for e in events]  # what the widget and printers see
    assert not any(s in line for s in PROMPT_SECRETS for line in shown)


def test_redacted_hash_is_not_the_hash_of_the_real_prompt(runs_dir, fake):
    plain = prompt_attr.attribute(SECRET_PROMPT, backend=fake, runs_dir=runs_dir, cache=False)
    redacted = prompt_attr.attribute(SECRET_PROMPT, backend=fake, runs_dir=runs_dir, redact=True)
    assert plain.record.prompt_sha256 != redacted.record.prompt_sha256
    assert plain.record.reproducible and not plain.record.redacted


def test_redact_does_not_write_the_call_cache(tmp_path, runs_dir):
    cache = tmp_path / "cache"
    prompt_attr.attribute(SECRET_PROMPT, backend=EchoBackend(), runs_dir=runs_dir, redact=True)
    assert leaks(cache, *PROMPT_SECRETS) == []
    import diskcache

    with diskcache.Cache(str(cache)) as c:
        assert len(c) == 0
    prompt_attr.attribute(SECRET_PROMPT, backend=EchoBackend(), runs_dir=runs_dir)  # the control: it does write
    with diskcache.Cache(str(cache)) as c:
        assert len(c) > 0


def test_a_redacted_run_cannot_be_resumed(runs_dir, fake):
    """Its stored prompt is masked: resuming would attribute another prompt than the one it began with."""

    def stop_after_baseline(event):
        if event.type == "baseline":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prompt_attr.attribute(SECRET_PROMPT, backend=fake, runs_dir=runs_dir, redact=True, on_event=stop_after_baseline)
    stopped = prompt_attr.load_run("latest", runs_dir)
    assert stopped.status == "aborted" and KEY not in stopped.record.prompt
    with pytest.raises(UsageError, match="cannot be resumed.*redact=True"):
        prompt_attr.attribute(resume=stopped.run_id, backend=fake, runs_dir=runs_dir)


def test_user_patterns_mask_and_are_stored_by_name_only(runs_dir, fake):
    a = prompt_attr.attribute(PROMPT, backend=fake, runs_dir=runs_dir, redact=True,
                              redact_patterns={"bird": r"Blue (?P<secret>Falcon)"})
    assert a.record.prompt == PROMPT.replace("Falcon", "******")
    assert [(r.kind, r.start, r.end) for r in a.record.redactions] == [("bird", 21, 27)]
    assert a.record.config["redact_patterns"] == ["bird"] and "Falcon" not in (a.path / "run.json").read_text()


def test_magic_redact(shell, runs_dir):  # noqa: F811
    shell.user_ns.pop("r", None)
    result = shell.run_cell(f"%%attribute --model fake --redact --out r\n{SECRET_PROMPT}")
    assert result.success, result.error_in_exec
    r = shell.user_ns["r"]
    state = json.dumps(AttributionWidget.from_attribution(r).get_state(), default=str)
    assert r.record.redacted and not any(s in r.record.prompt or s in state for s in PROMPT_SECRETS)


def test_cli_redact(tmp_path, capsys):
    prompt = tmp_path / "p.txt"
    prompt.write_text(SECRET_PROMPT)
    code = cli.main(["run", str(prompt), "--model", "fake", "--redact", "--redact-pattern", "Falcon", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    record = json.loads(out)
    assert record["redacted"] and record["reproducible"] is False
    assert {"openai_key", "custom1"} <= {r["kind"] for r in record["redactions"]}
    assert not any(s in out + err for s in (*PROMPT_SECRETS, "Falcon"))
    assert leaks(tmp_path / "runs", *PROMPT_SECRETS, "Falcon") == []


# --- the canary API key ---------------------------------------------------------------------------

@pytest.fixture
def canary(monkeypatch):
    key = "sk-canary-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "prompt_attr_widget"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


class Rejecting(BaseHTTPRequestHandler):
    """401 to everything, as a server with another key would answer (the fault server has no 401)."""

    seen: list[str] = []

    def do_POST(self):
        Rejecting.seen.append(self.headers.get("Authorization"))
        body = json.dumps({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def rejecting_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Rejecting)
    Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def assert_no_canary(key: str, tmp_path: Path, capfd, logs, *objects) -> None:
    """The key is in no file written, nothing printed, no log record, nor any object's text."""
    out, err = capfd.readouterr()
    texts = {"stdout": out, "stderr": err, "logs": "\n".join(r.getMessage() for r in logs.records)}
    texts.update({f"object {i}": text for i, text in enumerate(_texts(objects))})
    for where, text in texts.items():
        assert key not in text and "Bearer" not in text, where
        assert key[-12:] not in text, where  # not even a tail of it
    assert leaks(tmp_path, key, key[-12:], "Bearer") == []


def _texts(objects) -> list[str]:
    out = []
    for obj in objects:
        if isinstance(obj, prompt_attr.Attribution):
            widget = AttributionWidget.from_attribution(obj)
            out += [repr(obj), obj.to_json(), "\n".join(obj.notes()), json.dumps(widget.get_state(), default=str),
                    repr(widget)]
        else:
            out += [str(obj), repr(obj)]
    return out


def attempt(**options):
    """A run's result, or the error it raised (a failed probe raises before the run): both are scanned."""
    try:
        return prompt_attr.attribute(PROMPT, model="srv", **options)
    except prompt_attr.PromptAttrError as exc:
        return exc


def reason(outcome) -> str:
    return str(outcome) if isinstance(outcome, Exception) else outcome.record.reason or ""


def test_canary_key_is_used_and_leaks_nowhere(tmp_path, runs_dir, canary, capfd, debug_logs):
    with serve() as server:
        ok = attempt(base_url=server.url, runs_dir=runs_dir)
        by_arg = attempt(base_url=server.url, api_key=canary, runs_dir=runs_dir, cache=False)
        server.configure(permanent="http_500", retry_after_ms=1)
        failed = [attempt(base_url=server.url, runs_dir=runs_dir, cache=False, max_retries=1, scorer=scorer)
                  for scorer in ("auto", "embedding")]
        seen = server.stats.authorizations
    unreachable = [attempt(base_url="http://127.0.0.1:9/v1", runs_dir=runs_dir, max_retries=0, scorer=scorer)
                   for scorer in ("auto", "embedding")]
    assert ok.status == by_arg.status == "finished"
    assert failed[1].status == unreachable[1].status == "failed"  # the embedding scorer fails as a stored run
    assert all("500" in reason(o) for o in failed) and all("could not reach" in reason(o) for o in unreachable)
    assert seen and set(seen) == {f"Bearer {canary}"}  # the key really was sent, and only to the server
    assert_no_canary(canary, tmp_path, capfd, debug_logs, ok, by_arg, *failed, *unreachable)


def test_canary_key_rejected_with_401(tmp_path, runs_dir, canary, capfd, debug_logs, rejecting_url):
    Rejecting.seen.clear()
    outcomes = [attempt(base_url=rejecting_url, runs_dir=runs_dir, scorer=scorer) for scorer in ("auto", "embedding")]
    assert all("rejected the API key (401)" in reason(o) for o in outcomes)
    assert Rejecting.seen and set(Rejecting.seen) == {f"Bearer {canary}"}
    assert_no_canary(canary, tmp_path, capfd, debug_logs, *outcomes)


def test_canary_key_through_the_cli(tmp_path, canary, capfd, debug_logs, rejecting_url, fast_retries):
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    with serve() as server:
        assert cli.main(["run", str(prompt), "--model", "srv", "--base-url", server.url]) == 0
        assert cli.main(["run", str(prompt), "--model", "srv", "--base-url", server.url, "--json"]) == 0
        server.configure(permanent="dropped")
        assert cli.main(["run", str(prompt), "--model", "srv", "--base-url", server.url, "--no-cache",
                         "--timeout", "2"]) == 1
        assert set(server.stats.authorizations) == {f"Bearer {canary}"}
    assert cli.main(["run", str(prompt), "--model", "srv", "--base-url", rejecting_url, "--no-cache"]) == 1
    assert cli.main(["run", str(prompt), "--model", "srv", "--base-url", "http://127.0.0.1:9/v1"]) == 1
    assert cli.main(["ls"]) == 0 and cli.main(["show", "latest"]) == 0
    assert_no_canary(canary, tmp_path, capfd, debug_logs)


def test_the_scan_finds_a_planted_leak(tmp_path, canary, capfd, debug_logs):
    """The checks above could pass by looking in the wrong places: each place must catch a leak."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x.json").write_text(f'{{"k": "{canary}"}}')
    with pytest.raises(AssertionError):
        assert_no_canary(canary, tmp_path, capfd, debug_logs)
    (tmp_path / "runs" / "x.json").unlink()
    for leak in (lambda: print(canary), lambda: logging.getLogger("openai").debug("key %s", canary),
                 lambda: print("Authorization: Bearer x")):
        leak()
        with pytest.raises(AssertionError):
            assert_no_canary(canary, tmp_path, capfd, debug_logs)
        debug_logs.clear()
    with pytest.raises(AssertionError):
        assert_no_canary(canary, tmp_path, capfd, debug_logs, RuntimeError(f"bad key ...{canary[-12:]}"))


def test_canary_key_in_exceptions(tmp_path, runs_dir, canary, capfd, debug_logs):
    """Errors raised before a run starts (a bad option, a refused endpoint) never carry the key either."""
    errors = []
    for options in ({"base_url": f"http://x:{canary}@10.0.0.5/v1"}, {"base_url": "http://127.0.0.1:9/v1", "masks": 1}):
        with pytest.raises(UsageError) as info:
            prompt_attr.attribute(PROMPT, model="srv", api_key=canary, runs_dir=runs_dir, **options)
        errors.append(info.value)
    assert_no_canary(canary, tmp_path, capfd, debug_logs, *errors)
