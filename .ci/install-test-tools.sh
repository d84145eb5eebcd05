#!/usr/bin/env bash
# Debian packages some tests use; each such test skips, saying why, where its tool is missing.
#   chromium: tests/test_html_report.py renders Snakemake's HTML report in a headless browser.
#   pdflatex: tests/study/test_latex.py compiles the LaTeX report (reports/tables.tex). texlive-latex-base has
#   pdflatex, tabularx and geometry; texlive-latex-recommended has booktabs, float and caption (the report uses
#   no other package; its fonts are Computer Modern's Type 1 ones, which texlive-base brings).
set -uo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
{ command -v pdflatex && kpsewhich float.sty; } >/dev/null 2>&1 || missing+=(texlive-latex-base texlive-latex-recommended)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-test-tools: cannot install ${missing[*]} (needs root and apt-get); their tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; } \
    || echo "install-test-tools: could not install ${missing[*]}; their tests will skip"
exit 0
