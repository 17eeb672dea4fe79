"""A run's plan: its spans, what it may evaluate at most, and what that may cost.

Fixed once the prompt is segmented; the passes that follow it (the
hierarchical refinement) live with the run, since they depend on scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.base import BackendInfo
from ..core.config import AttributionConfig
from ..core.cost import call_cost, messages_tokens
from ..core.schema import Span
from ..stages.faithfulness import RANDOM_DRAWS
from ..stages.noise import placebo_prompt
from ..stages.plan import random_masks, worst_case_groups
from ..stages.segment import render


def messages_for(prompt_text: str, system: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt_text}]


@dataclass
class Plan:
    prompt: str
    config: AttributionConfig
    spans: list[Span]
    repeats: int  # answers to the baseline prompt, for the noise floor (the baseline itself included)
    masks: list[tuple[int, ...]] | None = field(init=False)  # a surrogate run's random deletions

    def __post_init__(self) -> None:
        c = self.config
        self.masks = random_masks(len(self.spans), c.masks, c.keep_prob, c.seed) if c.method == "surrogate" else None

    def straight_to_loo(self) -> bool:
        """With this few spans a coarse pass cannot save calls: leave-one-out it is."""
        return self.config.estimator(len(self.spans)) == "loo"

    def evaluations(self) -> int:
        """Evaluations this run may make at most: attribution, noise repeats, placebos and checks
        (behaviour checks counted as generations whether or not the scorer generates)."""
        c, n = self.config, len(self.spans)
        if c.method == "surrogate":
            attribution = c.masks
        elif self.straight_to_loo():
            attribution = n
        else:
            attribution = worst_case_groups(n, self.spans, self.prompt, c.group_fraction)
        checks = 0 if c.faithfulness == "off" else 1 + RANDOM_DRAWS[c.faithfulness]
        heldout = c.heldout_masks if c.faithfulness == "full" else 0
        return attribution + self.repeats - 1 + c.null_samples + c.behaviour_checks + checks + heldout

    def projected_cost(self, evaluations: int, info: BackendInfo, baseline_calls: int = 1) -> float | None:
        """Estimated spend: every planned call at the full prompt's estimated tokens and max_tokens.

        An estimate, not a bound (core/cost.py): a server's template may bill
        more tokens than estimated, so the budget is enforced call by call.
        `baseline_calls`: the baseline's answer, and its scoring call where the scorer makes one.
        """
        prompt_tokens = messages_tokens(messages_for(self.prompt, self.config.system), bound=False)
        chat = call_cost(info.price, prompt_tokens, self.config.max_tokens)
        embed = call_cost(info.embed_price, self.config.max_tokens)
        if chat is None or embed is None:
            return None
        return (evaluations + baseline_calls) * (chat + embed)

    def placebo_messages(self, k: int, answer: str) -> list[dict]:
        """The messages of placebo copy `k` of the prompt (stages/noise.py: placebo_prompt)."""
        return messages_for(placebo_prompt(self.prompt, self.spans, k, self.config.seed, answer), self.config.system)

    def messages(self, dropped: tuple[int, ...]) -> list[dict]:
        """The messages of the prompt with these spans deleted."""
        keep = [True] * len(self.spans)
        for i in dropped:
            keep[i] = False
        return messages_for(render(self.prompt, self.spans, keep), self.config.system)
