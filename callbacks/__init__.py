"""Lightning callbacks that take part in EMPO² iterations: tip memory, intrinsic reward, trajectory
files, periodic evaluation."""

from callbacks.evaluation import PeriodicEvaluation
from callbacks.intrinsic import IntrinsicReward
from callbacks.tip_memory import TipMemory
from callbacks.trajectory_writer import TrajectoryWriter

__all__ = ["IntrinsicReward", "PeriodicEvaluation", "TipMemory", "TrajectoryWriter"]
