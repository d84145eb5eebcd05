"""The LaTeX report compiles: pdflatex on the report of a real small study and of a rendered study with every kind
of row, no error, no missing character, no box more than 1 pt too wide or too high; and :func:`latex_escape`
writes every non-ASCII character the report's text can hold."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from srvae.study.config import ReportSettings
from srvae.study.report.aggregate import aggregate
from srvae.study.report.description import describe
from srvae.study.report.render import TEMPLATES_DIR, ReportError, latex_escape, render_report

from ..conftest import REPO, tiny_config
from ..test_workflow import _snakemake
from .test_report import MODELS, PLATEAU, REPORTED_FILE, RISING, SEEDS, STUDY, _table3_study, _write_run
from .test_report import table3_runs  # noqa: F401  (a fixture, used by name)

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None, reason="pdflatex is not installed (.ci/install-test-tools.sh installs it from Debian's "
                             "texlive-latex-base and texlive-latex-recommended where it can)")
#: a box this much too wide or too high is one a reader sees running off the page
TOLERANCE_PT = 1.0

#: where the report's text comes from: the code that writes it, the configs and the reported values
TEXT_SOURCES = [*sorted((REPO / "srvae" / "study" / "report").glob("*.py")), REPO / "srvae" / "study" / "config.py",
                *sorted((REPO / "srvae" / "study" / "data").glob("*.py")), REPO / "config.yaml",
                *sorted((REPO / "config").glob("*.yaml")), REPO / "workflow" / "reported.yaml",
                TEMPLATES_DIR / "tables.tex.j2"]


def _strings(path: Path) -> list[str]:
    """The text ``path`` can hand the report: a Python file's string constants (docstrings left out), a YAML
    file's keys and values, a template's whole text."""
    if path.suffix == ".py":
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        return [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    if path.suffix == ".yaml":
        def walk(value) -> list[str]:
            if isinstance(value, dict):
                return [s for k, v in value.items() for s in walk(k) + walk(v)]
            if isinstance(value, list):
                return [s for v in value for s in walk(v)]
            return [value] if isinstance(value, str) else []
        return walk(yaml.safe_load(path.read_text()))
    return [path.read_text()]


def _pdflatex(tex: Path) -> str:
    """Compile ``tex`` where it lies and check its log: no error, no missing character, no overfull box over
    :data:`TOLERANCE_PT`. Returns the log."""
    done = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                          capture_output=True, text=True, errors="replace", timeout=300)
    log = tex.with_suffix(".log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert done.returncode == 0 and not errors, (errors, done.stdout[-3000:])
    assert tex.with_suffix(".pdf").stat().st_size > 0
    missing = [line for line in log.splitlines() if line.startswith("Missing character")]
    assert not missing, missing
    overfull = [line for line in log.splitlines()
                if (m := re.match(r"Overfull \\[hv]box \(([\d.]+)pt too", line)) and float(m[1]) > TOLERANCE_PT]
    assert not overfull, overfull
    return log


# --- the escaping function ------------------------------------------------------------------------

def _report_characters() -> list[str]:
    """Every non-ASCII character of the report's code, configs, reported values and template, with LaTeX's
    specials and the characters OT1 prints as others."""
    found = sorted({c for path in TEXT_SOURCES for text in _strings(path) for c in text if not c.isascii()})
    assert {"λ", "≤", "±", "−", "×", "Δ", "‡", "†", "↗", "ø"} <= set(found)  # the scan finds what it is for
    return found + list("&%$#_{}~^\\<>|\"")


def test_every_character_of_the_reports_sources_is_written_in_ascii():
    for c in _report_characters():
        assert latex_escape(f"{c} x{c}y").isascii(), c


@needs_pdflatex
def test_every_character_of_the_reports_sources_compiles(tmp_path):
    """Each character alone, inside a word and twice in a row: pdflatex prints it, with no error and no
    missing character."""
    lines = [latex_escape(f"{c} x{c}y {c}{c}") for c in _report_characters()]
    tex = tmp_path / "characters.tex"
    tex.write_text("\\documentclass{article}\n\\begin{document}\n" + "\\par\n".join(lines) + "\n\\end{document}\n")
    _pdflatex(tex)


def test_escaping_writes_specials_symbols_accents_and_quotes_as_latex():
    assert latex_escape(r"SeRe_VAE #1 & 100% {x} ~ ^ \ $") == (
        r"SeRe\_VAE \#1 \& 100\% \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} \$")
    assert latex_escape("λ ≤ 4, p < 0.001") == r"$\lambda$ $\leq$ 4, p \textless{} 0.001"
    # adjacent symbols join into one formula: "$\times$$-$" would open display math
    assert latex_escape("×−1 and $×") == r"$\times-$1 and \$$\times$"
    assert latex_escape('Sønderby, Méndez, "Independent VAE"') == r"S{\o}nderby, M\'{e}ndez, ``Independent VAE''"


def test_a_character_without_latex_is_an_error_not_a_silent_drop():
    with pytest.raises(ReportError, match=r"U\+2603"):
        latex_escape("snow ☃")


# --- whole reports ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def every_kind_of_row(table3_runs, default_config, tmp_path_factory) -> Path:  # noqa: F811
    """tables.tex of a rendered study with Tables 1, 2 and 3 (fixture runs), each with its published rows;
    paired comparisons within a table and across tables; a model still improving (↗); a convergence check in
    K; runs on two devices; the default config's training budget with its exceptions in the header; labels
    with LaTeX's specials, quotes and ×."""
    root = tmp_path_factory.mktemp("every_kind_of_row")
    dirs = [_write_run(root, "mnist5k", name, seed, layers, centre + seed,
                       valid_elbo=RISING if name == "sere_vae" else PLATEAU)
            for name, (_, _, layers, centre) in MODELS.items() for seed in SEEDS]
    evaluation = json.loads((dirs[0] / "eval.json").read_text())
    (dirs[0] / "eval.json").write_text(json.dumps({**evaluation, "check": {"k": 5000, "nll": evaluation["nll"] - 0.2}}))
    speed = json.loads((dirs[-1] / "speed.json").read_text())
    (dirs[-1] / "speed.json").write_text(json.dumps({**speed, "device_name": "test GPU, 80 GiB"}))
    dirs += sorted(table3_runs.glob("cifar/*/seed*"))
    table3 = _table3_study(full=False)
    tables = {"sere_vae": "table1", "vae": "table2"} | {name: "table3" for name in table3["models"]}
    aggregate(dirs, root, pairs=[("sere_vae", "vae"), ("sere_maf_table3", "maf_table3")], tables=tables)
    models = {name: {**spec, "table": tables[name]} for name, spec in STUDY["models"].items()}
    models["vae"]["label"] = 'Mean-field VAE ("Independent VAE", 5 × 8)'
    study = {**STUDY, "datasets": {**STUDY["datasets"], **table3["datasets"]},
             "models": models | table3["models"], "training": describe(default_config)["training"]}
    assert study["training"]["exceptions"]
    out = root / "reports"
    render_report(root, ReportSettings(reported_file=str(REPORTED_FILE), improving_threshold=0.5), study, out)
    return out / "tables.tex"


@needs_pdflatex
def test_a_report_with_every_kind_of_row_compiles(every_kind_of_row):
    tex = every_kind_of_row.read_text()
    assert tex.isascii()
    for present in (r"$\nearrow$", "Table 1: MLP layers", "Table 2: ResNet layers", "Table 3: flows",
                    "the SeRe-VAE paper's rows", "reference points from other papers", "Paired comparisons across tables", "Larger $K$", "Sampling device",
                    "Trained otherwise", "``Independent VAE''"):
        assert present in tex, present
    _pdflatex(every_kind_of_row)


@needs_pdflatex
@pytest.mark.slow
def test_the_report_of_a_real_small_study_compiles(tmp_path):
    """A study trained, evaluated and reported by the workflow (one epoch): Table 1's VAE on binarised digits,
    Table 3's flow on dequantised ones, each beside its published row."""
    fast = {"n_samples": 3, "repeats": 1, "warmup": 0}
    models = {
        "vae": {"class": "vae", "label": "Tiny VAE", "reported": "burda2016/vae-1layer",
                "params": {"latents": 4, "hidden": [16]}, "speed": fast},
        "maf": {"class": "maf", "label": "MAF(2)", "table": "table3", "reported": "papamakarios2017/mnist/maf5",
                "params": {"mades": 2, "hidden": [8]}, "speed": fast},
    }
    cfg = tiny_config(tmp_path, models, epochs=1)
    cfg["datasets"]["tiny_logit"] = {**cfg["datasets"]["tiny"], "transform": "dequantise_logit"}
    cfg["study"]["datasets"] = ["tiny", "tiny_logit"]
    done = _snakemake(tmp_path, cfg, "--cores", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    tex = tmp_path / "reports" / "tables.tex"
    assert tex.read_text().isascii()
    _pdflatex(tex)
