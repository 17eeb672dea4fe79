"""The `prompt-attr` command: run, ab, resume, rerun, ls, show, compare, export, tag, archive, restore, delete, prune.

Exit codes: 0 success, 2 usage error, 3 refused or stopped by the budget,
1 any other failure, 130 interrupted (Ctrl-C) and 143 stopped by SIGTERM (the partial run is saved).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from .core.config import DEFAULT_RUNS_DIR
from .core.config import runs_dir as resolve_runs_dir
from .core.errors import BudgetRefused, PromptAttrError, Terminated, UsageError
from .core.events import Estimate, Progress, RunStarted
from .core.options import OPTIONS, Option, Price
from .core.text import safe_json_text, safe_terminal_text, usd
from .core.version import __version__
from .store.lifecycle import TAGS
from .store.runs import list_runs, read_run
from .views.result import Attribution
from .views.terminal import heatmap_terminal, top_table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prompt-attr", description="Which part of your prompt made the model say that?")
    p.add_argument("--version", action="version", version=f"prompt-attr {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="attribute a prompt (FILE, or - for standard input)")
    run.add_argument("file", metavar="FILE|-")
    add_run_options(run)
    _add_output_options(run)

    ls = sub.add_parser("ls", help="list the runs in the runs folder (archived ones with --all)")
    ls.add_argument("--runs-dir", help="runs folder (default $PROMPT_ATTR_RUNS_DIR or ./runs)")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--prompt", metavar="HASH", help="runs of this prompt (a prefix of its SHA-256)")
    ls.add_argument("--label")
    ls.add_argument("--tag", choices=TAGS)
    ls.add_argument("--model")
    ls.add_argument("--status", choices=["running", "finished", "aborted", "failed", "corrupt", "empty"])
    ls.add_argument("--all", action="store_true", help="archived runs too")

    tag = sub.add_parser("tag", help="tag a run: baseline, experimental or archived (--remove to untag)")
    tag.add_argument("run_id", metavar="RUN_ID")
    tag.add_argument("tags", nargs="+", choices=TAGS, metavar="TAG")
    tag.add_argument("--remove", action="store_true")
    tag.add_argument("--runs-dir")
    for name, text in (("archive", "hide a run from ls (it stays readable)"), ("restore", "un-archive a run")):
        p_ = sub.add_parser(name, help=text)
        p_.add_argument("run_id", metavar="RUN_ID")
        p_.add_argument("--runs-dir")
    delete = sub.add_parser("delete", help="delete a run (a baseline only with --force)")
    delete.add_argument("run_id", metavar="RUN_ID")
    delete.add_argument("--force", action="store_true")
    delete.add_argument("--runs-dir")
    prune = sub.add_parser("prune", help="retention: per prompt keep baselines and the last N runs, archive the rest")
    prune.add_argument("--keep-last", type=int, required=True, metavar="N")
    prune.add_argument("--delete-archived", action="store_true", help="also delete runs already archived")
    prune.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    prune.add_argument("--runs-dir")

    ab = sub.add_parser("ab", help="attribute two variants of a prompt under identical settings and compare them")
    ab.add_argument("file_a", metavar="FILE_A")
    ab.add_argument("file_b", metavar="FILE_B")
    add_run_options(ab)
    ab.add_argument("--json", action="store_true", help="print the comparison as JSON")

    resume = sub.add_parser("resume", help="finish a stopped (aborted or failed) run; results already stored are not paid again")
    rerun = sub.add_parser("rerun", help="repeat a run from its stored snapshot as a new run and check the answers match")
    for p_ in (resume, rerun):
        p_.add_argument("run_id", metavar="RUN_ID")
        p_.add_argument("--runs-dir")
        add_resume_options(p_)
        _add_output_options(p_)

    cmp = sub.add_parser("compare", help="compare two runs: span alignment, score deltas, answer diff (no model calls)")
    cmp.add_argument("run_a", metavar="RUN_A")
    cmp.add_argument("run_b", metavar="RUN_B")
    cmp.add_argument("--runs-dir")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")

    export = sub.add_parser(
        "export", help="a run as CSV, JSON or a standalone HTML report (no model calls)",
        description="A run as CSV, JSON or a standalone HTML report (no model calls). With -o FILE, or "
                    "when standard output is a pipe or a file, the export is written unchanged. When standard "
                    "output is a terminal, control characters, escape sequences and bidi controls of the "
                    "prompt and answers are shown as visible escapes (\\x1b, \\u202e), as `show` does, so "
                    "they cannot act on the terminal (JSON stays the same document, with \\u escapes).",
    )
    export.add_argument("run_id", metavar="RUN_ID")
    export.add_argument("--format", choices=["csv", "json", "html"], default="csv")
    export.add_argument("--table", choices=["spans", "evaluations"], default="spans", help="for csv and json")
    export.add_argument("--compare-with", metavar="RUN_B", help="html: a report comparing RUN_ID with RUN_B")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (exact data) instead of standard output")
    export.add_argument("--runs-dir")

    show = sub.add_parser("show", help="replay a saved run (no model calls); RUN_ID may be a prefix or 'latest'")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--runs-dir")
    part = show.add_mutually_exclusive_group()
    part.add_argument("--target", metavar="TEXT|START:END",
                      help="explain this part of the answer, scored from the stored evaluations (no model call): "
                           "text of the answer, or START:END (two whole numbers) for a range of its characters "
                           "unless that text occurs in the answer (then the text; --target-range forces a range)")
    _add_target_range(part)
    part.add_argument("--by-sentence", action="store_true",
                      help="for each sentence of the answer, the prompt spans that caused it (no model call)")
    _add_output_options(show)
    return p


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the run record as JSON on stdout")
    p.add_argument("--no-color", action="store_true", help="plain text heat-map")
    p.add_argument("--top", type=int, default=5, metavar="K", help="rows in the top-spans table (default 5)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options shared by the CLI and the %%attribute magic: the table of core/options.py,
    plus --target-range, --price-in/--price-out, --runs-dir and --tag."""
    for option in OPTIONS:
        if option.cli_flag is not None:
            _add_option(p, option)
        for extra in _EXTRAS.get(option.name, ()):
            extra(p)


def _add_option(p: argparse.ArgumentParser, option: Option) -> None:
    kind, extra = option.cli, {}
    if kind == "value":
        extra = {"type": option.cli_type, "choices": option.choices, "default": option.default}
    elif kind == "append":
        extra = {"action": "append", "type": option.cli_type, "default": option.default}
    elif kind == "switch":
        extra = {"action": "store_true", "default": option.default}
    elif kind == "negate":
        extra = {"action": "store_true"}
    if option.metavar:
        extra["metavar"] = option.metavar
    p.add_argument(option.cli_flag, dest=option.cli_dest, help=option.cli_help(), **extra)


def _add_target_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-range", metavar="START:END", help="explain characters START:END of the answer")


def _add_price(p: argparse.ArgumentParser) -> None:
    p.add_argument("--price-in", type=float, help="USD per million input tokens (for models with no known price)")
    p.add_argument("--price-out", type=float,
                   help=f"USD per million output tokens (default {Price.model_fields['output'].default:g})")


def _add_run_place(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", help=f"runs folder (default $PROMPT_ATTR_RUNS_DIR or ./{DEFAULT_RUNS_DIR})")
    p.add_argument("--tag", dest="tags", action="append", choices=("baseline", "experimental"), help="tag the run (repeatable)")


# Flags that are not options of the table, each after the option it belongs with.
_EXTRAS = {"target": (_add_target_range,), "price": (_add_price,), "label": (_add_run_place,)}


def add_resume_options(p: argparse.ArgumentParser) -> None:
    """What `resume` and `rerun` may change (or, for --base-url, give again); unset, the run's own."""
    for option in OPTIONS:
        if not option.on_resume:
            continue
        flag, extra = f"--{option.name.replace('_', '-')}", {}
        if option.cli == "negate":
            extra = {"action": argparse.BooleanOptionalAction}
        elif option.cli == "switch":
            extra = {"action": "store_true"}
        else:
            flag = option.cli_flag
            extra = {"type": option.cli_type, "choices": option.choices}
        p.add_argument(flag, dest=option.name, default=None, help=option.resume_cli_help(), **extra)


def run_options(args: argparse.Namespace) -> dict:
    """argparse namespace → keyword arguments of attribute()."""
    options = {}
    for option in OPTIONS:
        if option.cli == "negate":
            if getattr(args, option.cli_dest):
                options[option.name] = not option.default
        elif option.cli_flag is not None and getattr(args, option.name) is not None:
            options[option.name] = getattr(args, option.name)
    options.update({name: getattr(args, name) for name in ("runs_dir", "tags") if getattr(args, name) is not None})
    if args.target_range is not None:
        if args.target is not None:
            raise UsageError("give --target or --target-range, not both")
        options["target"] = _character_range(args.target_range)
    if args.price_in is not None or args.price_out is not None:
        # a plain dict: AttributionConfig.build validates it, so -1 or nan is a UsageError, not a traceback
        price = {"input": args.price_in or 0.0, "output": args.price_out}
        options["price"] = {k: v for k, v in price.items() if v is not None}  # no --price-out: Price's default
    return options


def resume_options(args: argparse.Namespace) -> dict:
    """argparse namespace of `resume`/`rerun` → the options given (the rest stay the run's own)."""
    names = ("runs_dir", *(o.name for o in OPTIONS if o.on_resume))
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _character_range(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise UsageError(f"--target-range {text!r} must be START:END character offsets, e.g. 0:12") from None


MAX_PROMPT_BYTES = 4 * 1024 * 1024  # 4 MiB: about a million tokens, past any model's context
MAX_PROMPT_ENV = "PROMPT_ATTR_MAX_PROMPT_BYTES"


def max_prompt_bytes() -> int:
    """The cap on a prompt read from a file or standard input: $PROMPT_ATTR_MAX_PROMPT_BYTES, else 4 MiB."""
    text = os.environ.get(MAX_PROMPT_ENV, "").strip()
    if not text:
        return MAX_PROMPT_BYTES
    if not text.isdecimal() or int(text) < 1:
        raise UsageError(f"{MAX_PROMPT_ENV}={text!r} must be a whole number of bytes, 1 or more (default {MAX_PROMPT_BYTES})")
    return int(text)


def read_prompt(path: str) -> str:
    """A prompt file (or - for standard input) as text; at most the cap plus one byte is read,
    so /dev/zero or an endless pipe is refused instead of filling the memory."""
    cap = max_prompt_bytes()
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(cap + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(cap + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > cap:
        size = f"{cap // 2**20} MiB" if cap % 2**20 == 0 else f"{cap}-byte"
        raise UsageError(f"{name} is larger than the {size} prompt cap; give a shorter prompt, "
                         f"or raise the cap with {MAX_PROMPT_ENV} (in bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start}): give a text file") from None


def projected(record) -> str:
    """The projection as the run starts: an estimate of typical token counts, never a limit."""
    if record.projected_usd is None:
        return "projected cost unknown"
    budget = record.config.get("budget")
    limit = "" if budget is None else f"; the budget of {usd(budget)} is enforced call by call"
    return f"projected about {usd(record.projected_usd)} (an estimate, not a limit{limit})"


class ProgressLine:
    """Live one-line progress on a terminal (at most ten redraws a second)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up now: the process's stderr may have been replaced
        self.live = self.stream.isatty()
        self.last = 0.0
        self.run_id: str | None = None

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            r = event.record
            self.run_id = r.run_id
            self.stream.write(f"run {r.run_id}: {len(r.spans)} spans, model {r.backend.model}, {projected(r)}\n")
        elif isinstance(event, Progress) and self.live and time.monotonic() - self.last > 0.1:
            self.last = time.monotonic()
            filled = int(20 * event.done / max(1, event.planned))
            spend = "?" if event.spend_usd is None else usd(event.spend_usd)
            eta = "" if event.eta_s is None else f" · ETA {event.eta_s:.0f}s"
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (20 - filled)}] {event.done}/{event.planned} · {event.calls} calls · "
                f"{event.cache_hits} cached · {spend} · {event.elapsed_s:.1f}s{eta}   "
            )
        elif isinstance(event, Estimate) and not self.live:
            self.stream.write(f"pass {event.round} done\n")
        self.stream.flush()


def print_result(result: Attribution, *, as_json: bool, color: bool, top: int) -> None:
    if as_json:
        print(result.to_json())
        return
    r = result.record
    if r.evaluations:  # a run that measured nothing (a --target not in the answer) has no heat-map to show
        print(heatmap_terminal(r, color=color))
        print()
    print(f"baseline output: {safe_terminal_text(result.baseline or '(none)')}")
    if r.evaluations:
        print()
        print(top_table(r, top))
    spend = "unknown (no price for this model)" if r.spend.usd is None else usd(r.spend.counted_usd)
    if r.spend.reserved_usd > 0:
        spend += f" (up to {usd(r.spend.reserved_usd)} of it for calls in flight when the run stopped)"
    print(
        f"\n{r.status} · {len(r.evaluations)} evaluations · {r.spend.calls} calls · "
        f"{r.spend.cache_hits} cache hits · spend {spend} · {r.timings_ms.get('total_ms', 0) / 1000:.1f}s"
        + (f"\nreason: {safe_terminal_text(r.reason)}" if r.reason else "")
        + f"\nrun saved: {result.path}"
    )


def _cmd_run(args) -> int:
    return _attribute_and_print(args, read_prompt(args.file), **run_options(args))


def _cmd_stored(args) -> int:
    """resume (finish a stopped run in place) or rerun (repeat it as a new run)."""
    options = resume_options(args)
    doing = "resuming" if args.command == "resume" else "re-running"
    print(f"{doing} run {safe_terminal_text(args.run_id)}", file=sys.stderr)
    return _attribute_and_print(args, None, **{args.command: args.run_id}, **options)


def _attribute_and_print(args, prompt: str | None, **options) -> int:
    from .api import attribute  # the engine, numpy and the SDK: only commands that run need them

    progress = ProgressLine()
    progress.run_id = options.get("resume")
    try:
        result = attribute(prompt, on_event=progress, **options)
    except KeyboardInterrupt as exc:
        if progress.run_id is None:
            raise
        print(f"\nprompt-attr: {_interrupted(exc)}; run {progress.run_id} is saved with every result received; "
              f"prompt-attr resume {progress.run_id} finishes it", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    if progress.live:
        sys.stderr.write("\n")
    color = not args.no_color and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print_result(result, as_json=args.json, color=color, top=args.top)
    if result.reproduction is not None:
        print(result.reproduction, file=sys.stderr if args.json else sys.stdout)
    if result.status == "aborted" and result.record.stopped_by == "budget":
        return 3
    return {"finished": 0}.get(result.status, 1)


MODEL_COLUMN_MAX = 48  # a model name longer than this is cut in `ls`


def _cmd_ls(args) -> int:
    where = {k: getattr(args, k) for k in ("prompt", "label", "tag", "model", "status")}
    runs = list_runs(resolve_runs_dir(args.runs_dir), **where)
    if not args.all and args.tag != "archived":
        runs = [r for r in runs if "archived" not in r.tags]
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=1))
        return 0
    if not runs:
        print("no runs yet")
        return 0
    models = [safe_terminal_text(r.model)[:MODEL_COLUMN_MAX] for r in runs]
    width = max(5, *map(len, models))  # whole names ("SmolLM2-135M-Instruct"), within reason
    print(f"{'run id':<30} {'status':<9} {'prompt':<8} {'label/tags':<18} {'model':<{width}} {'spans':>5} {'evals':>5} {'spend':>9}  top span")
    for r, model in zip(runs, models, strict=True):
        spend = "?" if r.spend_usd is None else usd(r.spend_usd)
        marks = safe_terminal_text(" ".join(filter(None, [r.label, *r.tags])))[:18]
        print(f"{safe_terminal_text(r.run_id):<30} {r.status:<9} {r.prompt_sha256[:8]:<8} {marks:<18} "
              f"{model:<{width}} {r.spans:>5} {r.evaluations:>5} {spend:>9}  {safe_terminal_text(r.top_span)}")
    empty = [r.run_id for r in runs if r.status == "empty"]
    if empty:
        print(f"\n{len(empty)} empty: a run folder with no event in it (the run never started: the disk was full or "
              f"the process was killed before its first write); prompt-attr delete {empty[0]} removes it"
              + ("; prune --keep-last N removes every empty one along with its retention" if len(empty) > 1 else ""))
    return 0


def _cmd_lifecycle(args) -> int:
    from .store import lifecycle

    folder = resolve_runs_dir(args.runs_dir)
    if args.command == "tag":
        change = {"remove" if args.remove else "add": tuple(args.tags)}
        print(f"{args.run_id}: tags {lifecycle.set_tags(args.run_id, folder, **change)}")
    elif args.command in ("archive", "restore"):
        print(f"{args.run_id}: tags {getattr(lifecycle, args.command)(args.run_id, folder)}")
    elif args.command == "delete":
        print(f"deleted {lifecycle.delete(args.run_id, folder, force=args.force)}")
    else:
        plan = lifecycle.plan_retention(folder, args.keep_last, args.delete_archived)
        print(("dry run: " if args.dry_run else "") + str(plan))
        if not args.dry_run:
            for run_id in lifecycle.apply_retention(plan, folder):
                print(f"  skipped {run_id}: another process began writing or removed it meanwhile")
    return 0


def _cmd_ab(args) -> int:
    from .api import ab

    options = run_options(args)
    result = ab(read_prompt(args.file_a), read_prompt(args.file_b), on_event=ProgressLine(), **options)
    print(result.comparison.to_json() if args.json else result)
    return 0 if result.a.status == result.b.status == "finished" else 1


def _cmd_compare(args) -> int:
    from .api import compare

    comparison = compare(args.run_a, args.run_b, runs_dir=args.runs_dir)
    print(comparison.to_json() if args.json else comparison)
    return 0


def _cmd_export(args) -> int:
    from .views import export

    folder = resolve_runs_dir(args.runs_dir)
    record = read_run(args.run_id, folder)
    if args.compare_with:
        if args.format != "html":
            raise UsageError("--compare-with makes an HTML report: add --format html")
        from .api import compare

        text = compare(record, args.compare_with, runs_dir=folder).report_html()
    elif args.format == "html":
        text = export.run_report(record)
    else:
        text = getattr(export, f"to_{args.format}")(record, args.table)
    if args.output:
        try:
            Path(args.output).write_text(text, "utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        print(f"wrote {safe_terminal_text(args.output)}", file=sys.stderr)
    elif sys.stdout.isatty():
        # A terminal acts on what it is sent (ESC[2J, OSC titles and links, C1, bidi
        # overrides): neutralised as `show` does. Files and pipes get the exact data.
        sys.stdout.write(safe_json_text(text) if args.format == "json" else safe_terminal_text(text))
    else:
        sys.stdout.write(text)
    return 0


def _cmd_show(args) -> int:
    folder = resolve_runs_dir(args.runs_dir)
    result = Attribution(read_run(args.run_id, folder), folder)
    if args.by_sentence:
        explanation = result.explain()
        if args.json:
            print(safe_json_text(json.dumps({"run_id": result.run_id, **explanation.as_dict(result.matrix())},
                                            indent=1, ensure_ascii=False)))
        else:
            print(safe_terminal_text(repr(explanation)))
            print(f"  scored from run {result.run_id}'s stored evaluations, no model call")
        return 0
    if args.target is not None or args.target_range is not None:
        target = _character_range(args.target_range) if args.target_range else _target_arg(args.target, result.baseline)
        result = result.for_target(target)
    color = not args.no_color and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print_result(result, as_json=args.json, color=color, top=args.top)
    return 0


def _target_arg(text: str, answer: str | None) -> str | tuple[int, int]:
    """`--target` of `show`: START:END (two whole numbers) is a character range, anything else
    text; so is START:END that occurs in the answer ("opens at 9:30"), which is then said."""
    start, sep, end = text.partition(":")
    if not (sep and start.isdecimal() and end.isdecimal()):
        return text
    if answer is not None and text in answer:
        print(f"prompt-attr: {text!r} occurs in the answer: explaining that text; --target-range {text} "
              f"explains characters {start} to {end}", file=sys.stderr)
        return text
    return int(start), int(end)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "run": _cmd_run, "resume": _cmd_stored, "rerun": _cmd_stored, "ls": _cmd_ls, "show": _cmd_show,
        "compare": _cmd_compare, "export": _cmd_export, "ab": _cmd_ab,
        **dict.fromkeys(("tag", "archive", "restore", "delete", "prune"), _cmd_lifecycle),
    }[args.command]
    with _sigterm_as_interrupt():
        return _handled(handler, args)


def _handled(handler, args) -> int:
    """The command's exit code; errors a person can act on as one message, never a traceback."""
    try:
        return handler(args)
    except BudgetRefused as exc:
        print(f"prompt-attr: {exc}", file=sys.stderr)
        return 3
    except PromptAttrError as exc:
        print(f"prompt-attr: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"\nprompt-attr: {_interrupted(exc)}; the partial run is saved (see prompt-attr ls; "
              "prompt-attr resume RUN_ID finishes it)", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM is handled like Ctrl-C: a run is saved, then the command exits 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _terminate(signum, frame) -> None:
    raise Terminated()


def _interrupted(exc: KeyboardInterrupt) -> str:
    return "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"


def exit_with(code: int) -> None:
    """Exit with the command's code. Nothing is left to save by now, so a Ctrl-C during the
    interpreter's shutdown, which waits for worker threads (a call still in flight, an
    executor's thread), ends the process at once instead of printing a KeyboardInterrupt
    traceback from the threading module."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(code)


def console() -> None:
    """The `prompt-attr` command."""
    exit_with(main())


if __name__ == "__main__":
    console()
