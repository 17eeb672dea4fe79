"""IPython magics: `%%attribute` (and `%attribute SOURCE`), `%attribute_runs`, `%attribute_show`.

`%load_ext prompt_attr` registers them. Options are parsed by IPython's
magic_arguments with the same option set as the CLI; every error a user can
cause comes back as one line (IPython's UsageError), never a traceback.
"""

from __future__ import annotations

import keyword
import os
import string

from IPython.core import magic_arguments
from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.display import display
from IPython.utils.process import arg_split

from .api import attribute, attribute_async, list_runs, load_run
from .backends import resolve_backend
from .cli import add_run_options, read_prompt, run_options
from .core.config import AttributionConfig
from .core.errors import PromptAttrError
from .core.text import safe_html_text, safe_terminal_text, usd
from .stages.segment import segment
from .views.widget import AttributionWidget

EXAMPLES = """
Examples
--------
%%attribute --model local
### Role
You are a geography tutor. Always answer in French.
### Question
What is the capital of France?

%%attribute --model gpt-4o-mini --budget 0.05 --segment paragraph --out result
...

%%attribute --background --out job     (then, in another cell: result = await job)

%%attribute --format --out r           (fills {name} placeholders from the notebook)
Summarise {document} for {audience}.

%attribute --model local prompt.md     (the line magic: a prompt file ...)
%attribute --out r my_prompt           (... or a variable holding the prompt)
"""


def _attribute_parser() -> magic_arguments.MagicArgumentParser:
    p = magic_arguments.MagicArgumentParser(
        prog="%attribute",  # the help's usage line adds one more "%"
        description="Attribute the model's answer to the spans of a prompt (the cell's with %%attribute, a file's "
        "or a variable's with %attribute SOURCE); shows a live heat-map.",
        add_help=False,
    )
    add_run_options(p)
    p.add_argument("--out", metavar="NAME", help="bind the Attribution (or, with --background, the widget) to NAME")
    p.add_argument("--background", action="store_true", help="return at once; Stop works; `await NAME` gives the result")
    p.add_argument("--format", action="store_true", help="fill {name} placeholders from the notebook's variables")
    p.add_argument("source", nargs="?", help="%%attribute only: a prompt file, or a variable holding the prompt")
    return p


ATTRIBUTE_PARSER = _attribute_parser()


def _fail(message: str):
    raise IPythonUsageError(message)


def _fill_placeholders(cell: str, namespace: dict) -> str:
    try:
        return string.Formatter().vformat(cell, (), namespace)
    except KeyError as exc:
        _fail(f"--format: {{{exc.args[0]}}} is not a variable in this notebook (use {{{{ and }}}} for literal braces)")
    except (ValueError, IndexError, AttributeError) as exc:
        _fail(f"--format: cannot fill the placeholders: {exc}")


@magics_class
class AttributeMagics(Magics):
    @line_cell_magic
    def attribute(self, line: str, cell: str | None = None):
        try:
            # POSIX quoting, like IPython's own magics: --system "Be brief" loses its quotes
            args = ATTRIBUTE_PARSER.parse_args(arg_split(line, posix=os.name == "posix"))
        except IPythonUsageError:
            raise
        except ValueError as exc:  # an unclosed quote
            _fail(f"invalid options: {exc}: {line.strip()!r}")
        except SystemExit:  # argparse's own exit on a bad value
            _fail(f"invalid options: {line.strip()!r}; see %%attribute?")
        if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            _fail(f"--out {args.out!r} is not a valid Python variable name")
        prompt = self._prompt(args.source) if cell is None else self._cell_prompt(args.source, cell)
        if args.format:
            prompt = _fill_placeholders(prompt, self.shell.user_ns)
        if not prompt.strip():
            _fail("the cell is empty: write the prompt to attribute below the %%attribute line" if cell is not None
                  else f"the prompt in {args.source} is empty")
        try:
            options = run_options(args)
            # runs_dir and tags are attribute()'s own arguments, not options of the config
            config = AttributionConfig.build(**{k: v for k, v in options.items() if k in AttributionConfig.model_fields})
            segment(prompt, config.segment, window_tokens=config.window_tokens)
            backend = resolve_backend(config)
        except PromptAttrError as exc:
            _fail(str(exc))
        options.pop("model", None)
        options.pop("base_url", None)
        if args.background:
            return self._background(prompt, backend, options, args.out)
        return self._blocking(prompt, backend, options, args.out)

    def _prompt(self, source: str | None) -> str:
        """The line magic's prompt: a variable of the notebook holding text, or a prompt file."""
        if source is None:
            _fail("usage: %attribute [options] FILE_OR_VARIABLE (a prompt file, or a variable holding the prompt); "
                  "%%attribute takes the prompt from the cell; %attribute? lists the options")
        value = self.shell.user_ns.get(source) if source.isidentifier() else None
        if isinstance(value, str):
            return value
        if value is not None:
            _fail(f"{source} is of type {type(value).__name__}, not text: the prompt must be a str")
        if not os.path.isfile(os.path.expanduser(source)):
            _fail(f"{source!r} is neither a variable of this notebook nor a file")
        try:
            return read_prompt(os.path.expanduser(source))
        except PromptAttrError as exc:
            _fail(str(exc))

    @staticmethod
    def _cell_prompt(source: str | None, cell: str) -> str:
        if source is not None:
            _fail(f"unexpected {source!r} after the options: with %%attribute the prompt is the cell "
                  "(%attribute SOURCE takes it from a file or a variable)")
        return cell

    def _blocking(self, prompt, backend, options, out):
        widget = AttributionWidget()
        display(widget)
        try:
            result = attribute(prompt, backend=backend, on_event=widget, **options)
        except KeyboardInterrupt:
            result = widget.result
            print(f"interrupted: the partial run is saved as {result.run_id if result else '(not started)'}")
        except PromptAttrError as exc:
            widget.header = {**widget.header, "status": "failed", "reason": str(exc)}
            _fail(str(exc))
        finally:
            widget.refresh_saved_view()  # what a notebook reopened without its kernel shows
        if out:
            self.shell.user_ns[out] = result
        return None

    def _background(self, prompt, backend, options, out):
        widget = AttributionWidget()
        display(widget)

        async def job(sink):
            try:
                return await attribute_async(prompt, backend=backend, on_event=sink, **options)
            finally:
                widget.refresh_saved_view()

        try:
            widget.start(job)
        except RuntimeError:
            _fail("--background needs a running event loop (a Jupyter kernel); run without it here")
        if out:
            self.shell.user_ns[out] = widget
        return None

    @line_magic
    def attribute_runs(self, line: str):
        """List the runs in the runs folder: %attribute_runs [RUNS_DIR]."""
        try:
            return RunTable(list_runs(line.strip() or None))
        except PromptAttrError as exc:
            _fail(str(exc))

    @line_magic
    def attribute_show(self, line: str):
        """Replay a saved run as a widget, no model calls: %attribute_show RUN_ID [RUNS_DIR]."""
        parts = line.split()
        if not parts or len(parts) > 2:
            _fail("usage: %attribute_show RUN_ID [RUNS_DIR]  (RUN_ID may be a prefix or 'latest')")
        try:
            return AttributionWidget.from_attribution(load_run(parts[0], runs_dir=parts[1] if len(parts) > 1 else None))
        except PromptAttrError as exc:
            _fail(str(exc))

    @line_magic
    def attribute_compare(self, line: str):
        """Compare two saved runs, no model calls: %attribute_compare RUN_A RUN_B [RUNS_DIR]."""
        from .api import compare

        parts = line.split()
        if len(parts) not in (2, 3):
            _fail("usage: %attribute_compare RUN_A RUN_B [RUNS_DIR]  (ids, prefixes or 'latest')")
        try:
            return compare(parts[0], parts[1], runs_dir=parts[2] if len(parts) > 2 else None).widget()
        except PromptAttrError as exc:
            _fail(str(exc))


AttributeMagics.attribute.__doc__ = ATTRIBUTE_PARSER.format_help() + EXAMPLES


class RunTable:
    """The runs table, as HTML in notebooks and as aligned text elsewhere."""

    COLUMNS = ("run_id", "created_at", "status", "model", "spans", "evaluations", "spend", "top_span")

    def __init__(self, runs):
        self.runs = runs

    def _rows(self):
        for r in self.runs:
            yield (r.run_id, r.created_at[:19], r.status, r.model, str(r.spans), str(r.evaluations), usd(r.spend_usd), r.top_span)

    def _repr_html_(self) -> str:
        if not self.runs:
            return "<p>no runs yet</p>"
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{safe_html_text(v)}</td>" for v in row) + "</tr>" for row in self._rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        if not self.runs:
            return "no runs yet"
        return safe_terminal_text("\n".join("  ".join(row) for row in [self.COLUMNS, *self._rows()]))


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(AttributeMagics)
