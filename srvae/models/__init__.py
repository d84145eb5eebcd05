"""The one model contract (:mod:`srvae.models.base`) and the registry of every model of the study
(:mod:`srvae.registry`, imported on its own: it imports every model, and the models import this)."""

from .base import DataKind, ElboTerms, LatentVariableModel, Scores, training_mode

__all__ = ["DataKind", "ElboTerms", "LatentVariableModel", "Scores", "training_mode"]
