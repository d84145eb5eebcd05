"""The study machinery: the typed config, data, the training loop, IW-NLL evaluation, sampling speed, the DAG's
steps, aggregation of the runs, and the report (tables, figures, provenance)."""
