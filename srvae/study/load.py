"""A study as its entry points open it (the ``srvae`` command and the Snakefile): the config validated by
:mod:`.config`, then every model's published-number id looked up in the reported values of
:mod:`.report.reported`, so that a wrong id fails before any job runs, not in the report at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .config import ConfigError, StudyConfig, load_config
from .report.reported import ReportedValueError, check_reported_ids


def check_study(cfg: StudyConfig) -> StudyConfig:
    """``cfg``, once every ``models.<entry>.reported`` id is found in ``report.reported_file``; else a
    :class:`~.config.ConfigError` naming the unknown ids or the unreadable file."""
    try:
        check_reported_ids([m.reported for m in cfg.models.values()], Path(cfg.report.reported_file))
    except (ReportedValueError, OSError) as e:
        raise ConfigError(f"report.reported_file / models.*.reported: {e}") from None
    return cfg


def load_study(paths: Iterable[str | Path]) -> StudyConfig:
    """The study of the YAML config files ``paths`` (merged, later files win), validated and checked."""
    return check_study(load_config(paths))
