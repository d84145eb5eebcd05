"""What every study dataset is, whatever its pre-processing: a name and its train, validation and test tensors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Self

import torch
from torch import Tensor


@dataclass
class Splits:
    """Train, validation and test images, all ``[N, D]``; subclasses add what their pre-processing needs."""

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def data_dim(self) -> int:
        return self.train.shape[1]

    def to(self, device: torch.device | str) -> Self:
        """The same data on ``device`` (every other field as it is)."""
        return dataclasses.replace(self, train=self.train.to(device), valid=self.valid.to(device),
                                   test=self.test.to(device))
