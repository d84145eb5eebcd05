# srvae: the SeRe-VAE reproduction study as a Snakemake DAG.
#   snakemake --cores 2                          # the default CPU study (config.yaml)
#   snakemake --cores 8 --resources gpu=2        # GPUs: at most two GPU jobs at once
#   snakemake -n                                 # show the DAG without running it
# Rules live in workflow/rules/; config keys are described in config/README.md.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


onstart:
    write_resolved(CFG, CONFIGS)


rule all:
    input:
        REPORT_FILES,


include: "workflow/rules/runs.smk"
include: "workflow/rules/report.smk"
