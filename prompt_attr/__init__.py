"""`import prompt_attr` and `%load_ext prompt_attr`: the public API of prompt_attr_widget."""

from prompt_attr_widget import *  # noqa: F403
from prompt_attr_widget import __all__, __version__  # noqa: F401
