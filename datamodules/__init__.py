"""Lightning datamodules: on-policy data regenerated every epoch."""

from datamodules.rollout import RolloutDataModule

__all__ = ["RolloutDataModule"]
