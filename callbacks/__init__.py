"""Lightning callbacks that take part in EMPO² iterations (rollout hooks, trajectory files)."""

from callbacks.trajectory_writer import TrajectoryWriter

__all__ = ["TrajectoryWriter"]
