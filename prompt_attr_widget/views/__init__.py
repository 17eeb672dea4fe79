"""The views layer: a record turned into what a person sees (the Attribution result, the
heat scale and notes, static HTML, terminal, export, comparisons, the anywidgets).
Imports core and stages only."""
