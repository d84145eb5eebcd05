"""The library is self-contained: a regular (non-editable) install runs a study and renders its report from any
directory, with the templates and the schema it ships as package data.

Run from a user's virtual environment too (activated or not): the test's own environment, where the wheel goes,
sees that environment's packages (torch & co.) through a ``.pth`` file, since a venv made from inside a venv
inherits the base interpreter's site-packages, not the outer venv's."""

import importlib.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import yaml

from .conftest import REPO, tiny_config


def _spec(name: str) -> bool:
    """Whether ``name`` is importable here (False also where its parent package is missing)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_non_editable_install_trains_and_renders_a_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed copy, never a checkout
    wheels = tmp_path / "wheels"
    # build here only where this interpreter's setuptools can make a wheel (setuptools ≥ 70.1, or the `wheel`
    # package beside it); else (a venv made by `python -m venv` holds setuptools 65 without `wheel`, or none at all)
    # pip builds in an isolated environment
    can_build = _spec("setuptools.command.bdist_wheel") or _spec("wheel")
    isolation = ["--no-build-isolation"] if can_build else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, cwd=tmp_path, env=env)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in sys.path if p.endswith("site-packages") and not p.startswith(str(env_dir))]
    (Path(inner) / "outer-environment.pth").write_text("\n".join(outer) + "\n")  # torch & co. from this environment
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    *map(str, wheels.glob("srvae-*.whl"))], check=True, capture_output=True, env=env)

    study = tmp_path / "study"  # a directory with a config and the reported values, and no source tree
    (study / "workflow").mkdir(parents=True)
    shutil.copy(REPO / "workflow" / "reported.yaml", study / "workflow" / "reported.yaml")
    cfg = tiny_config(study, epochs=1)
    cfg["report"] = {"title": "Installed"}  # reported_file: the default, relative to the working directory
    cfg["models"]["vae"]["reported"] = "burda2016/vae-1layer"
    (study / "config.yaml").write_text(yaml.safe_dump(cfg))

    def srvae(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(env_dir / "bin" / "srvae"), *args], cwd=study, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([str(python), "-c", "import srvae; print(srvae.__file__)"], cwd=study, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(env_dir)), where  # the installed copy, not the checkout
    for step in ("train", "evaluate", "speed"):
        done = srvae(step, "--dataset", "tiny", "--model", "vae", "--seed", "0")
        assert done.returncode == 0, done.stderr[-2000:]
    for step in ("aggregate", "report"):
        done = srvae(step)
        assert done.returncode == 0, done.stderr[-2000:]
    table = (study / "reports" / "tables.md").read_text()
    assert table.startswith("# Installed") and "86.76" in table
    assert "\\toprule" in (study / "reports" / "tables.tex").read_text()
    schema = srvae("schema")
    assert schema.returncode == 0 and schema.stdout == (REPO / "srvae" / "study" / "config.schema.yaml").read_text()
