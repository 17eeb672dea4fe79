"""nbval for the local model's outputs, which differ between CPUs (loaded by pytest for notebooks/).

llama.cpp is compiled for the CPU it is built on (AVX2, AVX-512, NEON, or
none), and its floating point differs between builds: a log-probability
score reads 0.712 on one machine and 0.710 on another, two spans whose
scores nearly tie swap places, a span near the noise floor lands on the
other side of it, and a tiny model's greedy answer to a masked prompt takes
another word and goes on differently. A cell is tagged (besides
`nbval-check-output`) by what it shows:

- no other tag: nothing from the model's floating point; compared exactly.
- `model-numbers`: the model's figures in a fixed text. The text with every
  number masked (and runs of spaces, which follow the figures' widths,
  made one) must match the stored output exactly; each number must match
  its stored counterpart within NUMBER_TOLERANCE, |new - stored| <= ABS +
  REL * max(|new|, |stored|): ABS is the log-probability scorer's minimum
  effect (0.1 nats/token, the scorer these cells show), the smallest score
  difference a run itself calls an effect.
- `model-text`: what the model said (its answers to masked prompts) or
  verdicts and rankings that sit near the noise floor, which another CPU
  can change: executed, and its outputs must be of the same kinds (stream,
  display, mime types) as the stored ones; their text is not compared. The
  cells after such a cell assert the facts that hold on any CPU.

Outputs are first sanitized by notebooks/nbval_sanitize.cfg, as every
compared cell is. tests/surface/test_notebooks.py runs this check (and runs
it on an interpreter whose llama.cpp was built for another instruction set
when PROMPT_ATTR_NBVAL_PYTHON names one).
"""

from __future__ import annotations

import re
import types

import pytest

TAG, TEXT_TAG = "model-numbers", "model-text"
ABS, REL = 0.1, 0.1
NUMBER_TOLERANCE = f"|new - stored| <= {ABS} + {REL} * max(|new|, |stored|)"
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
MASK = "<number>"
SPACES = re.compile(r"[ \t]+")


def close(new: float, stored: float) -> bool:
    return abs(new - stored) <= ABS + REL * max(abs(new), abs(stored))


def _texts(item, outputs) -> list[str]:
    """The compared strings of a cell's outputs, sanitized, in nbval's order."""
    from nbval.plugin import transform_streams_for_comparison

    texts = []
    for out in transform_streams_for_comparison(outputs):
        for key in sorted(out):
            if key in item.parent.skip_compare:
                continue
            values = out[key].items() if key == "data" else [(key, out[key])]
            for name, value in sorted(values):
                if name not in item.parent.skip_compare and isinstance(value, str):
                    texts.append(item.sanitize(value))
    return texts


def compare_with_tolerance(self, test, ref, skip_compare=None) -> bool:
    """nbval's comparison of the masked text, then every number within the tolerance."""
    sanitize = self.sanitize
    self.sanitize = lambda s: SPACES.sub(" ", NUMBER.sub(MASK, sanitize(s))) if isinstance(s, str) else s
    try:
        if not type(self).compare_outputs(self, test, ref, skip_compare):
            self.comparison_traceback.insert(0, f"(numbers masked: cell tagged {TAG})")
            return False
    finally:
        del self.sanitize  # the class's own again
    new = [float(m) for text in _texts(self, test) for m in NUMBER.findall(text)]
    stored = [float(m) for text in _texts(self, ref) for m in NUMBER.findall(text)]
    if len(new) != len(stored):  # "1.5" against "1 . 5": equal once masked, not the same figures
        self.comparison_traceback = [f"{len(stored)} numbers stored, {len(new)} now"]
        return False
    far = [(s, n) for n, s in zip(new, stored, strict=True) if not close(n, s)]
    if far:
        self.comparison_traceback = [
            f"numbers beyond the tolerance {NUMBER_TOLERANCE} (stored -> new): "
            + ", ".join(f"{s:g} -> {n:g}" for s, n in far[:20])
        ]
        return False
    return True


def compare_kinds(self, test, ref, skip_compare=None) -> bool:
    """nbval's comparison with every text made empty: the same outputs, of the same kinds."""
    self.sanitize = lambda s: "" if isinstance(s, str) else s
    try:
        same = type(self).compare_outputs(self, test, ref, skip_compare)
    finally:
        del self.sanitize
    if not same:
        self.comparison_traceback.insert(0, f"(texts not compared: cell tagged {TEXT_TAG})")
    return same


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    from nbval.plugin import IPyNbCell

    for item in items:
        tags = item.cell.metadata.get("tags", []) if isinstance(item, IPyNbCell) else []
        if TEXT_TAG in tags:
            item.compare_outputs = types.MethodType(compare_kinds, item)
        elif TAG in tags:
            item.compare_outputs = types.MethodType(compare_with_tolerance, item)
