"""Plant each fault of faults.py, one at a time, in a copy of the committed tree, and run its tests there.

    python docs/measurements/cpu-2026-12-07-fault-audit/plant.py                  # every fault, all its tests
    python docs/measurements/cpu-2026-12-07-fault-audit/plant.py --audit-tests    # only the file the audit added
    python docs/measurements/cpu-2026-12-07-fault-audit/plant.py --only R03,F26

One line per fault, tab-separated: id, CAUGHT (a test failed) / SURVIVED (every test passed) / NOMATCH (the code
changed since: the text to replace is not there exactly once) / ERROR (pytest could not run: collection or usage),
seconds, the first failing test, the description. The working tree is never touched: the copy is `git archive HEAD`
in a temporary folder, imported through PYTHONPATH, so commit first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from faults import FAULTS  # noqa: E402  (the fault list beside this script)


def copy_of_head(dest: Path) -> None:
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=HERE, check=True, capture_output=True,
                          text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=root, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def plant_and_test(tree: Path, path: str, old: str, new: str, tests: list[str]) -> tuple[str, str]:
    target = tree / path
    text = target.read_text()
    if text.count(old) != 1:
        return "NOMATCH", ""
    target.write_text(text.replace(old, new))
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider",
                               "-m", "not slow", "-W", "ignore::UserWarning"], cwd=tree, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    finally:
        target.write_text(text)
    failed = [line.split(" - ")[0].removeprefix("FAILED ") for line in done.stdout.splitlines()
              if line.startswith("FAILED")]
    outcome = {0: "SURVIVED", 1: "CAUGHT"}.get(done.returncode, "ERROR")
    if outcome == "ERROR":  # what pytest said last: a collection error, no test found
        failed = (done.stdout + done.stderr).strip().splitlines()[-1:]
    return outcome, failed[0] if failed else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated fault ids")
    parser.add_argument("--audit-tests", action="store_true", help="run only the test file the audit added")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="srvae-plant-") as tmp:
        tree = Path(tmp)
        copy_of_head(tree)
        for fid, path, old, new, tests, description in FAULTS:
            if wanted and fid not in wanted:
                continue
            start = time.perf_counter()
            outcome, first = plant_and_test(tree, path, old, new, tests[:1] if args.audit_tests else tests)
            print(f"{fid}\t{outcome}\t{time.perf_counter() - start:.0f}s\t{first}\t{description}", flush=True)


if __name__ == "__main__":
    main()
