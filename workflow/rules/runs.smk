# One run = (dataset, model, seed): train → evaluate (IW-NLL) and speed (sampling).
# GPU jobs declare gpu=1: `--resources gpu=N` runs at most N of them at once; without a GPU they run on CPU.

STEP_CMD = (
    "srvae {step} --threads {threads}"
    " --dataset {wildcards.dataset:q} --model {wildcards.model:q} --seed {wildcards.seed:q} > {log:q} 2>&1"
)


rule train:
    output:
        model=f"{RUN}/{paths.MODEL}",
        metrics=f"{RUN}/{paths.METRICS}",
        summary=f"{RUN}/{paths.TRAIN}",
    params:
        spec=lambda wc: run_spec(wc, "train"),
    log:
        f"{LOG}/train.log",
    threads: CFG.threads
    resources:
        gpu=1,
    shell:
        STEP_CMD.replace("{step}", "train")


rule evaluate:
    input:
        rules.train.output.model,
    output:
        [f"{RUN}/{name}" for name in paths.OUTPUTS["evaluate"]],
    params:
        spec=lambda wc: run_spec(wc, "evaluate"),
    log:
        f"{LOG}/evaluate.log",
    threads: CFG.threads
    resources:
        gpu=1,
    shell:
        STEP_CMD.replace("{step}", "evaluate")


rule speed:
    input:
        rules.train.output.model,
    output:
        [f"{RUN}/{name}" for name in paths.OUTPUTS["speed"]],
    params:
        spec=lambda wc: run_spec(wc, "speed"),
    log:
        f"{LOG}/speed.log",
    threads: every_core  # timings are taken alone on the machine
    resources:
        gpu=1,
    shell:
        STEP_CMD.replace("{step}", "speed").replace("{threads}", str(CFG.threads))  # but times with the jobs' threads
