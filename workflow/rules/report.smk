# Collect every run into tables of results, then render the report (Markdown, LaTeX, figures).


rule aggregate:
    input:
        [f"{run}/{name}" for run in RUN_DIRS
         for name in ("train.json", "metrics.csv", "eval.json", "log_px.npy", "speed.json")],
    output:
        report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Aggregated results"),
        f"{RESULTS}/curves.csv",
        f"{RESULTS}/kl_per_layer.csv",
        report(f"{RESULTS}/comparisons.csv", caption="../report/comparisons.rst", category="Aggregated results"),
    params:
        pairs=json.dumps(CFG.comparisons()),  # a change of the compared pairs re-aggregates, reruns nothing
    log:
        "logs/aggregate.log",
    shell:
        "srvae aggregate > {log:q} 2>&1"


rule report:
    input:
        rules.aggregate.output,
        CFG.report.reported_file,
        TEMPLATES_DIR / "tables.md.j2",
        TEMPLATES_DIR / "tables.tex.j2",
    output:
        report(f"{REPORTS}/tables.html", caption="../report/tables.rst", category="Tables"),
        REPORT_TABLES,
        report(directory(f"{REPORTS}/figures"), patterns=["{name}.png"], caption="../report/figures.rst",
               category="Figures"),
    params:
        # labels, reported ids, title: a change re-renders the report without rerunning any run
        spec=json.dumps({"report": CFG.report.model_dump(mode="json"),
                         "models": {m: CFG.models[m].model_dump(mode="json", by_alias=True) for m in CFG.study.models}},
                        sort_keys=True),
    log:
        "logs/report.log",
    shell:
        "srvae report > {log:q} 2>&1"
