"""Execute the example notebooks and store their outputs in place.

    python notebooks/execute_notebooks.py                 # all *.ipynb in notebooks/
    python notebooks/execute_notebooks.py quickstart.ipynb

Run it after changing a notebook or anything that changes its outputs (the
widget's static heat-map, the local model, llama-cpp-python), then check
the result with

    python -m pytest --nbval-lax notebooks/ --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider

Like tests/test_notebooks.py, it runs each notebook with a cold call cache
and an empty runs folder (both temporary) and without OPENAI_API_KEY, so
the stored outputs are the ones a fresh CI run produces. The kernel's
working directory is notebooks/.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="prompt-attr-nb-") as tmp:
        saved = dict(os.environ)
        os.environ["PROMPT_ATTR_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ["PROMPT_ATTR_RUNS_DIR"] = str(Path(tmp) / "runs")
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            os.environ.pop(name, None)
        try:
            start = time.monotonic()
            client = nbclient.NotebookClient(
                nb,
                timeout=1800,
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent)}},
                # No widget state: each widget's saved view (static HTML) is what a notebook
                # shows without its kernel, and with state nbconvert would fetch a widget
                # renderer from a CDN.
                store_widget_state=False,
            )
            client.execute()
            elapsed = time.monotonic() - start
        finally:
            os.environ.clear()
            os.environ.update(saved)
    nb.metadata.pop("widgets", None)  # a state an earlier run stored
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str]) -> int:
    paths = [HERE / a for a in argv] if argv else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: executing ...", flush=True)
        print(f"{path.name}: done in {execute(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
