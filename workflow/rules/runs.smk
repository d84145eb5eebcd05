# One run = (dataset, model, seed): train → evaluate (IW-NLL) and speed (sampling).
# GPU jobs declare gpu=1: `--resources gpu=N` runs at most N of them at once; without a GPU they run on CPU.
# train.fuse_seeds: the seeds of a fused model train in one job (train_fused), which writes every seed's files.
import re
import sys

from srvae.study.run.fused import fused_models, study_on_cuda

FUSED = fused_models(CFG, study_on_cuda(CFG), log=lambda message: print(message, file=sys.stderr))

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


if FUSED:

    # a fused model's files could come from either rule: this one writes them (train's wildcard allows any model)
    ruleorder: train_fused > train

    rule train_fused:
        output:
            [f"{paths.run_dir(RESULTS, '{dataset}', '{model}', seed)}/{name}" for seed in CFG.seeds
             for name in paths.OUTPUTS["train"]],
        wildcard_constraints:
            model="|".join(map(re.escape, FUSED)),
        params:
            spec=lambda wc: run_spec(wc, "train"),
        log:
            [f"{paths.log_dir('{dataset}', '{model}', seed)}/train.log" for seed in CFG.seeds],
        threads: CFG.threads
        resources:
            gpu=1,  # one job, one GPU, every seed
        shell:  # every seed's log gets the job's output (strict shell mode: the pipe fails where srvae does)
            f"srvae train-fused --threads {{threads}} --dataset {{wildcards.dataset:q}} "
            f"--model {{wildcards.model:q}} --seeds {' '.join(map(str, CFG.seeds))} 2>&1 | tee {{log:q}} > /dev/null"


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
