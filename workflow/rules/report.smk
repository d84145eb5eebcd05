# Collect every run into tables of results, then render the report (Markdown, LaTeX, figures).


rule aggregate:
    input:
        [f"{run}/{name}" for run in RUN_DIRS for name in ("train.json", "metrics.csv", "eval.json", "speed.json")],
    output:
        RESULTS + "/summary.csv",
        RESULTS + "/curves.csv",
        RESULTS + "/kl_per_layer.csv",
    log:
        "logs/aggregate.log",
    shell:
        "srvae aggregate --config " + RESOLVED_CONFIG + " > {log} 2>&1"


rule report:
    input:
        rules.aggregate.output,
        CFG["report"]["reported_file"],
        TEMPLATES_DIR / "tables.md.j2",
        TEMPLATES_DIR / "tables.tex.j2",
    output:
        REPORT_TABLES,
        directory(REPORTS + "/figures"),
    log:
        "logs/report.log",
    shell:
        "srvae report --config " + RESOLVED_CONFIG + " > {log} 2>&1"
