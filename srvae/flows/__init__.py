"""Reusable bijectors with the nflows contract (:mod:`srvae.flows.base`): MADE and inverse autoregressive flows."""

from .base import Bijector, IdentityBijector
from .iaf import IAF, IAFStep
from .made import MADE

__all__ = ["Bijector", "IdentityBijector", "IAF", "IAFStep", "MADE"]
