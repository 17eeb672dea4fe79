"""prompt_attr: which part of your prompt made the model say that?

Spans of the prompt are deleted in concurrent batches of model calls, each
answer is scored against the baseline answer, and the scores become a
heat-map of the prompt. See README.md.
"""

from .core.errors import (
    BackendError,
    BudgetRefused,
    MissingDependency,
    PromptAttrError,
    RunNotFound,
    Terminated,
    UsageError,
)
from .core.version import __version__

# Everything else loads on first use (PEP 562): `import prompt_attr`, `prompt-attr ls`
# and `show` then start without importing numpy, the openai SDK or the engine.
_LAZY = {
    "segment": ".stages.segment",
    "Span": ".core.schema",
    "attribute": ".api",
    "attribute_async": ".api",
    "list_runs": ".api",
    "load_run": ".api",
    "score_deletions": ".api",
    "compare": ".api",
    "ab": ".api",
    "Comparison": ".views.compare",
    "AttributionConfig": ".core.config",
    "Price": ".core.config",
    "Attribution": ".views.result",
    "SpanResult": ".views.result",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def load_ipython_extension(ipython) -> None:
    """`%load_ext prompt_attr`: register %%attribute, %attribute_runs, %attribute_show."""
    from .magics import load_ipython_extension as register

    register(ipython)

__all__ = [
    "Attribution",
    "AttributionConfig",
    "BackendError",
    "BudgetRefused",
    "MissingDependency",
    "Price",
    "PromptAttrError",
    "RunNotFound",
    "Span",
    "SpanResult",
    "Terminated",
    "UsageError",
    "__version__",
    "attribute",
    "attribute_async",
    "ab",
    "compare",
    "Comparison",
    "list_runs",
    "load_ipython_extension",
    "load_run",
    "score_deletions",
    "segment",
]
