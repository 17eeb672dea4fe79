"""llama-cpp-python's OpenAI-compatible server, with the model's weights in plain CPU buffers.

`python -m prompt_attr_widget.backends.llama_server ARGS` takes the arguments of
`python -m llama_cpp.server` and runs it with `local.plain_cpu_weights()` in force, so a
machine whose llama.cpp would take its crashing AMX path serves the model instead of
dying on the first request (see that function).
"""

from __future__ import annotations

from .local import plain_cpu_weights


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    with plain_cpu_weights():
        serve()


if __name__ == "__main__":
    main()
