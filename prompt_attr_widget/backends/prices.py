"""Prices of models, per million tokens: the packaged table, or $PROMPT_ATTR_PRICES.

A backend takes its price from here unless the user gives one; a budget on
a model with no known price is refused (engine/budget.py), never guessed.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from importlib import resources

from ..core.config import Price

_SNAPSHOT = re.compile(r"\d{4}(?:-\d{2}-\d{2})?")  # gpt-4o-2024-08-06, gpt-3.5-turbo-0125


@lru_cache(maxsize=4)
def price_table(path: str | None = None) -> dict[str, dict[str, Price]]:
    """The price table: the packaged file, or $PROMPT_ATTR_PRICES when set."""
    path = path or os.environ.get("PROMPT_ATTR_PRICES")
    if path:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    else:
        raw = json.loads(resources.files(__package__).joinpath("prices.json").read_text("utf-8"))
    return {
        kind: {name: Price(**p) for name, p in raw.get(kind, {}).items()}
        for kind in ("chat", "embedding")
    }


def lookup_price(model: str, kind: str = "chat") -> Price | None:
    """Price for a model name; dated snapshots (gpt-4o-2024-08-06) match their family."""
    table = price_table()[kind]
    if model in table:
        return table[model]
    # Only a date suffix names a snapshot of the same model: o1-pro or
    # gpt-4o-audio-preview are other models at other prices, never o1 or gpt-4o.
    family = next(
        (name for name in table if model.startswith(name + "-") and _SNAPSHOT.fullmatch(model[len(name) + 1 :])),
        None,
    )
    return table[family] if family else None














