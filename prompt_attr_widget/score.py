"""Score: how far an ablated output moved from the baseline output.

Embedding cosine distance, normalised to 0–1 as `clip(1 − cos, 0, 1)`:
0 means the same meaning (an identical answer scores exactly 0 without an
embedding call), 1 means unrelated or opposite (negative cosines saturate at
1). The raw cosine is stored next to the score so nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"embedding sizes differ ({va.shape[0]} vs {vb.shape[0]})")
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(va @ vb / (na * nb), -1.0, 1.0))


def distance_score(cos: float) -> float:
    """Normalised embedding distance in [0, 1]."""
    return float(min(1.0, max(0.0, 1.0 - cos)))
