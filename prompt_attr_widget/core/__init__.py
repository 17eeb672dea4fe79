"""The core layer: types and rules with no behaviour (errors, options and config, the run
schema, events and the one reducer, identity, text safety, cost rules, secret patterns).
Imports nothing else of the package, so everything may import it."""
