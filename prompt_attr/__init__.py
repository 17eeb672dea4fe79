"""`import prompt_attr` and `%load_ext prompt_attr`: the public name of prompt_attr_widget.

Lazy, like the package it names: `import prompt_attr` loads no engine,
numpy or SDK; each name is looked up in prompt_attr_widget on first use.
"""

import prompt_attr_widget as _impl
from prompt_attr_widget import __all__, __version__, load_ipython_extension  # noqa: F401


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_impl, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
