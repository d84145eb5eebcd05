# Collect every run into tables of results, then render the report (Markdown, LaTeX, figures).


rule aggregate:
    input:
        [f"{run}/{name}" for run in RUN_DIRS for step in ("train", "evaluate", "speed")
         for name in paths.OUTPUTS[step] if name != paths.MODEL],
    output:
        report(f"{RESULTS}/{paths.SUMMARY}", caption="../report/summary.rst", category="Aggregated results"),
        f"{RESULTS}/{paths.CURVES}",
        f"{RESULTS}/{paths.KL_PER_LAYER}",
        report(f"{RESULTS}/{paths.COMPARISONS}", caption="../report/comparisons.rst", category="Aggregated results"),
    params:
        # a change of the compared pairs, or of the paper table a model belongs to (the family of its Holm
        # correction), re-aggregates and reruns nothing
        pairs=json.dumps(CFG.comparisons()),
        tables=json.dumps(CFG.model_tables()),
    log:
        f"{paths.LOGS}/aggregate.log",
    shell:
        "srvae aggregate > {log:q} 2>&1"


rule report:
    input:
        rules.aggregate.output,
        CFG.report.reported_file,
        TEMPLATES_DIR / "tables.md.j2",
        TEMPLATES_DIR / "tables.tex.j2",
    output:
        report(f"{REPORTS}/{paths.TABLES_HTML}", caption="../report/tables.rst", category="Tables"),
        REPORT_TABLES,
        report(directory(f"{REPORTS}/{paths.FIGURES}"), patterns=["{name}.png"], caption="../report/figures.rst",
               category="Figures"),
    params:
        # labels, reported ids, title: a change re-renders the report without rerunning any run
        spec=json.dumps({"report": CFG.report.model_dump(mode="json"),
                         "models": {m: CFG.models[m].model_dump(mode="json", by_alias=True) for m in CFG.study.models}},
                        sort_keys=True),
    log:
        f"{paths.LOGS}/report.log",
    shell:
        "srvae report > {log:q} 2>&1"
