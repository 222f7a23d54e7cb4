"""Lightning callbacks that take part in EMPO² iterations: tip memory, intrinsic reward, trajectory
files, periodic evaluation; and the check that every rank sees the run directory."""

from callbacks.evaluation import PeriodicEvaluation
from callbacks.intrinsic import IntrinsicReward
from callbacks.shared_run_dir import SharedRunDir
from callbacks.tip_memory import TipMemory
from callbacks.trajectory_writer import TrajectoryWriter

__all__ = ["IntrinsicReward", "PeriodicEvaluation", "SharedRunDir", "TipMemory", "TrajectoryWriter"]
