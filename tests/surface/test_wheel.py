"""The wheel ships both packages, the JS and CSS, and the extension loads from it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (path,) = out.glob("prompt_attr-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "prompt_attr/__init__.py",
        "prompt_attr_widget/__init__.py",
        "prompt_attr_widget/magics.py",
        "prompt_attr_widget/views/widget.py",
        "prompt_attr_widget/backends/prices.json",
        *(f"prompt_attr_widget/{layer}/__init__.py" for layer in ("core", "stages", "backends", "engine", "store", "views")),
        "prompt_attr_widget/static/common.js",
        "prompt_attr_widget/static/widget.js",
        "prompt_attr_widget/static/compare.js",
        "prompt_attr_widget/static/widget.css",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.endswith(".gguf") or "/runs/" in n for n in names)


def test_extension_loads_from_the_installed_wheel(wheel, tmp_path):
    """A fresh venv: the dependencies from the environment running the tests, the package only from the wheel.

    Not `system_site_packages`: inside a virtual environment the "system" is
    the base interpreter, which need not have the dependencies. A .pth line
    adds the running environment's site-packages after the venv's own, and
    the .pth files there (an editable install's finder) are not processed.
    """
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (_site_packages(python) / "running-env.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(_site_packages(python)), str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    script = (
        "import prompt_attr, prompt_attr_widget, pathlib\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "ip.run_line_magic('load_ext', 'prompt_attr')\n"
        "assert 'attribute' in ip.magics_manager.magics['cell']\n"
        "assert 'attribute_show' in ip.magics_manager.magics['line']\n"
        "from prompt_attr_widget.views.widget import AttributionWidget\n"
        "assert 'export default' in AttributionWidget._esm and '.prompt-attr' in AttributionWidget._css\n"
        "assert 'function hideSavedView' in AttributionWidget._esm\n"
        "print(pathlib.Path(prompt_attr_widget.__file__).resolve())\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a PYTHONPATH to a checkout would win
    proc = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=clean)
    assert proc.returncode == 0, proc.stderr
    assert str(env_dir.resolve()) in proc.stdout, f"imported from the wrong place: {proc.stdout}"


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())
