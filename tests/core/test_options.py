"""The options table (core/options.py) is the one source of the options.

The config model, the CLI and magic flags with their help, the resumable
and operational lists and the reading of a stored run's config all come
from it; runs written before (schema 1 and 2) still read, with the table's
defaults for what they lack. The budget's exit code comes from a typed
field, not from the wording of a reason.

tests/core/data holds run.json files written by earlier versions with the
fake backend: `v1` by the commit before schema 2 (526bd81^), `v2` by the
commit before this table; `finished` is a hierarchical run of 12 spans,
`budget` a leave-one-out run stopped by its budget (`engine.check_projection`
patched out so the run starts and the budget stops it mid-run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import prompt_attr
from prompt_attr_widget import api, cli
from prompt_attr_widget.core import options as table
from prompt_attr_widget.core.config import AttributionConfig, Price, config_model
from prompt_attr_widget.core.events import RunAborted, RunFailed, RunResumed
from prompt_attr_widget.core.options import BY_NAME, OPTIONS, Option
from prompt_attr_widget.core.reducer import apply_event
from prompt_attr_widget.core.schema import RunRecord, Spend
from prompt_attr_widget.store.runs import list_runs, read_run
from prompt_attr_widget.views.compare import OPERATIONAL
from prompt_attr_widget.views.result import Attribution

DATA = Path(__file__).parent / "data"
OLD_RUNS = sorted(DATA.glob("run_v*.json"))


def subparser(name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


def flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


# --- the table and the config model ---------------------------------------------------------------


def test_every_option_is_a_config_field_with_the_tables_type_default_and_bounds_and_vice_versa():
    fields = AttributionConfig.model_fields
    assert list(fields) == [o.name for o in OPTIONS]  # the run file's config keeps the table's order
    for o in OPTIONS:
        field = fields[o.name]
        assert field.annotation == o.type, o.name
        assert field.default == o.default, o.name
        bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in field.metadata}
        assert bounds == o.bounds, o.name
        assert AttributionConfig().model_dump()[o.name] == o.default


def test_the_table_is_coherent():
    assert len(BY_NAME) == len(OPTIONS)
    assert set(table.RESUMABLE) <= set(table.OPERATIONAL)  # what a resume may change never changes results
    assert set(table.REPLAYED).isdisjoint(table.OPERATIONAL)
    for o in OPTIONS:
        assert o.choices is None or o.default in o.choices, o.name
        assert o.cli not in ("switch", "negate") or o.type is bool, o.name
        assert o.help and "default" not in o.help, f"{o.name}: the help states the default itself"
        if o.choices is not None:
            AttributionConfig.build(**{o.name: o.choices[-1]})  # every choice validates


def test_validating_a_config_loads_nothing_heavy():
    code = (
        "import sys\n"
        "from prompt_attr_widget.core.config import AttributionConfig\n"
        "AttributionConfig.build(model='fake', segment='line', budget=1, price={'input': 1})\n"
        "print([m for m in ('numpy', 'aiolimiter', 'openai', 'prompt_attr_widget.engine.run') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_new_table_entry_becomes_a_validated_field_and_a_flag(monkeypatch):
    extra = Option("patience", int, 3, "calls to wait for before giving up", ge=1, le=9, resumable=True,
                   operational=True)
    Model = config_model((*OPTIONS, extra))
    assert Model().patience == 3 and Model(patience=9).patience == 9
    with pytest.raises(ValidationError):
        Model(patience=0)
    with pytest.raises(ValidationError, match="model must not be empty"):  # the validators come along
        Model(model=" ")
    assert "patience" not in AttributionConfig.model_fields  # the real table is untouched

    monkeypatch.setattr(cli, "OPTIONS", (*OPTIONS, extra))
    action = flag_actions(subparser("run"))["--patience"]
    assert action.default == 3 and action.type is int and "(default 3)" in action.help
    assert cli.run_options(subparser("run").parse_args(["x", "--patience", "5"]))["patience"] == 5
    assert "--patience" in flag_actions(subparser("resume"))  # resumable: resume and rerun take it


# --- the flags --------------------------------------------------------------------------------------

# The flags of `prompt-attr run` before the table: none may go missing.
RUN_FLAGS = {
    "--model", "--base-url", "--embed-model", "--system", "--segment", "--window-tokens", "--method", "--masks",
    "--keep-prob", "--scorer", "--target", "--target-range", "--noise-repeats", "--min-effect", "--faithfulness",
    "--logprob-template", "--seed", "--threshold", "--budget", "--price-in", "--price-out", "--concurrency", "--rpm",
    "--max-tokens", "--timeout", "--max-retries", "--no-cache", "--runs-dir", "--label", "--tag", "--allow-insecure",
    "--redact", "--redact-pattern",
}
API_ONLY = {"spans", "heldout_masks", "group_fraction", "temperature", "price", "embed_price"}


@pytest.mark.parametrize("command", ["run", "ab", "magic"])
def test_every_option_has_a_flag_whose_default_choices_and_help_come_from_the_table(command):
    if command == "magic":
        pytest.importorskip("IPython")
        from prompt_attr_widget.magics import ATTRIBUTE_PARSER as parser
    else:
        parser = subparser(command)
    flags = flag_actions(parser)
    assert set(flags) >= RUN_FLAGS
    assert {o.name for o in OPTIONS if o.cli_flag is None} == API_ONLY
    for o in OPTIONS:
        if o.cli_flag is None:
            continue
        action = flags[o.cli_flag]
        assert action.dest == o.cli_dest
        assert action.default == (False if o.cli == "negate" else o.default), o.name
        assert tuple(action.choices) == o.choices if o.choices else action.choices is None, o.name
        assert action.help == o.cli_help(), o.name
        shown = parser._get_formatter()._expand_help(action)  # as --help prints it
        assert o.help in shown and f"default{':' if o.cli == 'negate' else ''} " in shown, o.name
        assert o.shown_default() in shown, o.name
    assert flags["--threshold"].dest == "refine_threshold" and flags["--no-cache"].dest == "no_cache"
    assert flags["--redact-pattern"].dest == "redact_patterns" and flags["--tag"].dest == "tags"
    assert "(default 0)" in flags["--price-out"].help  # Price's own default


def test_every_default_is_accepted_by_its_flag():
    """`auto`, the segment default a run stores, was refused by `--segment` (which claimed the
    default was sentence): a run's stored value could not be given back on the command line."""
    for o in OPTIONS:
        if o.choices is not None:
            args = subparser("run").parse_args(["x", o.cli_flag, str(o.default)])
            assert cli.run_options(args)[o.name] == o.default


def test_run_options_takes_its_names_from_the_table():
    argv = ["x", "--model", "fake", "--target-range", "0:4", "--price-in", "2", "--no-cache", "--tag", "baseline",
            "--runs-dir", "r", "--redact-pattern", "bird", "--redact"]
    options = cli.run_options(subparser("run").parse_args(argv))
    on_cli = {o.name for o in OPTIONS if o.cli_flag is not None}
    given = {"model", "target", "price", "cache", "tags", "runs_dir", "redact_patterns", "redact"}
    assert set(options) == {o.name for o in OPTIONS if o.name in on_cli and o.default is not None} | given
    assert options["target"] == (0, 4) and options["price"] == {"input": 2.0}  # output: Price's default
    assert options["cache"] is False and options["redact_patterns"] == ["bird"] and options["tags"] == ["baseline"]
    config = AttributionConfig.build(**{k: v for k, v in options.items() if k not in ("runs_dir", "tags")})
    assert config.price == Price(input=2) and config.redact


@pytest.mark.parametrize("command", ["resume", "rerun"])
def test_resume_and_rerun_take_the_resumable_options_unset_by_default(command):
    parser = subparser(command)
    flags = flag_actions(parser)
    for o in OPTIONS:
        if not o.on_resume:
            assert o.cli_flag not in flags or o.cli_flag == "--no-cache", o.name
            continue
        action = flags[o.cli_flag if o.cli == "value" else f"--{o.name.replace('_', '-')}"]
        assert action.dest == o.name and action.default is None, o.name
        assert action.choices == o.choices
    assert {o.name for o in OPTIONS if o.on_resume} == {*table.RESUMABLE, "base_url"}
    assert "--cache" in flags and "--no-cache" in flags  # on and off, the default being the command's
    given = cli.resume_options(parser.parse_args(["RUN", "--max-retries", "1", "--no-cache", "--budget", "2"]))
    assert given == {"max_retries": 1, "cache": False, "budget": 2.0}
    assert cli.resume_options(parser.parse_args(["RUN"])) == {}


def test_the_resumable_and_operational_lists_come_from_the_table():
    resumable, operational = api.RESUMABLE_OPTIONS, OPERATIONAL
    assert resumable == tuple(o.name for o in OPTIONS if o.resumable)
    assert operational == frozenset(o.name for o in OPTIONS if o.operational)
    # what they were before the table
    assert set(resumable) == {"budget", "concurrency", "rpm", "timeout", "max_retries", "cache", "allow_insecure"}
    assert operational == {"concurrency", "rpm", "timeout", "max_retries", "budget", "cache", "label", "allow_insecure"}


# --- stored configs ---------------------------------------------------------------------------------


def install(path: Path, runs: Path) -> str:
    record = json.loads(path.read_text("utf-8"))
    folder = runs / record["run_id"]
    folder.mkdir(parents=True)
    shutil.copy(path, folder / "run.json")
    return record["run_id"]


@pytest.mark.parametrize("path", OLD_RUNS, ids=lambda p: p.stem)
def test_an_old_run_reads_with_the_tables_defaults_for_what_it_lacks(path, runs_dir, capsys):
    """...or with what runs of its time ran with (`before`: no placebos, no behavioural checks)."""
    run_id = install(path, runs_dir)
    stored = json.loads(path.read_text("utf-8"))["config"]
    record = read_run(run_id, runs_dir)
    settings = record.settings
    assert isinstance(settings, AttributionConfig)
    for o in OPTIONS:
        expected = stored.get(o.name)
        if expected is None:
            expected = o.default if o.before is None or o.name in stored else o.before
        assert settings.model_dump(mode="json")[o.name] == expected, o.name
    if "v1" in path.name:
        assert "scorer" not in stored and settings.scorer == "auto" and settings.masks == 32
        assert settings.max_retries == 2  # what it stored, not today's default
    assert record.stopped_by is None
    a = prompt_attr.load_run(run_id, runs_dir=runs_dir)
    assert a.method == stored["method"] and [r.label for r in list_runs(runs_dir)] == [stored["label"]]
    assert cli.main(["show", run_id, "--runs-dir", str(runs_dir), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert f"{record.status} · {len(record.evaluations)} evaluations" in out
    assert ("reason: stopped before passing the budget" in out) == ("budget" in path.name)


def test_a_stored_config_with_unknown_or_unreadable_options_still_reads():
    base = json.loads((DATA / "run_v2_finished.json").read_text("utf-8"))
    base["config"].update(removed_option=3, timeout=-1, label=7, max_tokens=None)
    record = RunRecord.model_validate(base)
    problems: dict[str, str] = {}
    settings = AttributionConfig.from_stored(record.config, problems)
    assert settings == record.settings
    assert (settings.timeout, settings.label, settings.max_tokens) == (60.0, None, 128)
    assert set(problems) == {"timeout", "label"}
    assert AttributionConfig.from_stored({"redact_patterns": ["x"]}).redact_patterns is None  # a rule between two


def test_old_and_new_runs_compare_on_what_they_computed(runs_dir):
    old = install(DATA / "run_v1_finished.json", runs_dir)
    new = install(DATA / "run_v2_finished.json", runs_dir)
    c = prompt_attr.compare(old, new, runs_dir=runs_dir)
    # v1 stored no scorer, masks, faithfulness...: read at their defaults, they are no difference
    assert c.config_changes == {}


def test_a_v1_run_stopped_by_its_budget_resumes(runs_dir):
    from prompt_attr_widget.backends.fake import FakeBackend

    run_id = install(DATA / "run_v1_budget.json", runs_dir)
    price = Price(input=1000.0, output=1000.0)
    backend = FakeBackend(price=price, embed_price=price)
    result = prompt_attr.attribute(resume=run_id, runs_dir=runs_dir, budget=100.0, backend=backend)
    assert result.status == "finished" and result.record.stopped_by is None
    assert len(result.record.evaluations) == len(result.record.spans) == 12  # leave-one-out
    assert backend.calls == 12 - 8  # the 8 stored evaluations and the baseline are not asked again


# --- the budget's exit code -------------------------------------------------------------------------


def test_a_budget_stop_is_typed_and_exits_3(runs_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("prompt_attr_widget.engine.run.check_projection", lambda *a: None)  # start; stop later
    prompt = tmp_path / "p.txt"
    prompt.write_text("Alpha one. Beta two. Gamma three.", "utf-8")
    code = cli.main(["run", str(prompt), "--model", "fake", "--budget", "0.001", "--price-in", "1000",
                     "--price-out", "1000", "--method", "loo", "--runs-dir", str(runs_dir), "--no-color"])
    assert code == 3
    (folder,) = runs_dir.iterdir()
    record = read_run(folder.name, runs_dir)
    assert record.status == "aborted" and record.stopped_by == "budget"
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text("utf-8").splitlines()]
    assert events[-1]["type"] == "run_aborted" and events[-1]["stopped_by"] == "budget"
    (folder / "run.json").unlink()  # rebuilt from the events by the one reducer: the same
    assert read_run(folder.name, runs_dir).stopped_by == "budget"


@pytest.mark.parametrize("stopped_by, code", [(None, 1), ("budget", 3)])
def test_the_exit_code_reads_the_field_not_the_reason(stopped_by, code, runs_dir, tmp_path, monkeypatch):
    record = RunRecord.model_validate_json((DATA / "run_v2_budget.json").read_bytes())
    record.reason = "interrupted while the budget review ran; every result so far is saved"
    record.stopped_by = stopped_by
    monkeypatch.setattr(api, "attribute", lambda *a, **k: Attribution(record, runs_dir))
    prompt = tmp_path / "p.txt"
    prompt.write_text("Alpha one.", "utf-8")
    assert cli.main(["run", str(prompt), "--model", "fake", "--no-color"]) == code


def test_the_reducer_folds_the_stop_and_a_resume_clears_it():
    record = RunRecord.model_validate_json((DATA / "run_v2_budget.json").read_bytes())
    record = apply_event(record, RunAborted(reason="stopped", stopped_by="budget", spend=Spend()))
    assert record.stopped_by == "budget"
    record = apply_event(record, RunResumed(at="t", planned=3))
    assert record.stopped_by is None and record.status == "running"
    record = apply_event(record, RunAborted(reason="stopped", stopped_by="budget", spend=Spend()))
    record = apply_event(record, RunFailed(error="HTTP 500", spend=Spend()))
    assert record.stopped_by is None and record.status == "failed"
    record = apply_event(record, RunAborted(reason="interrupted (the budget was fine)", spend=Spend()))
    assert record.stopped_by is None  # an interrupt, whatever its reason says


def test_the_readme_documents_every_option():
    """The README's options table is written by hand: it must name every option of the table."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    table = readme[readme.index("## Options"):readme.index("## How it works")]
    missing = [o.name for o in OPTIONS
               if not (o.cli_flag and f"`{o.cli_flag}" in table) and f"`{o.name}" not in table]
    assert not missing, f"README's options table lacks {missing}"
