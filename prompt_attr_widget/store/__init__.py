"""The store layer: the disk (run folders, events.jsonl, run.json, summaries, tags,
lifecycle). Folds events with the reducer from core and computes nothing the engine
computed. Imports core only."""
