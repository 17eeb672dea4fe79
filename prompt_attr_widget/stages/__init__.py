"""The stages layer: pure, synchronous pipeline steps (segment, plan, score, noise,
surrogate, estimate, faithfulness, span alignment and answer diffs). Imports core only."""
