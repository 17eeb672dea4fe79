"""The engine layer: the async pipeline (evaluate with cache, budget, rate limit and
concurrency; the run; redaction of a run). Imports core, stages and backends."""
