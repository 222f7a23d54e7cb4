"""Multi-step text environments: the protocol, the registry and the built-in ones."""

from empo2.envs.base import ENVS, StepResult, TextEnv, env_class
from empo2.envs.keyroom import KeyRoomEnv
from empo2.envs.pool import EnvPool
from empo2.envs.sciworld import ScienceWorldEnv

__all__ = ["ENVS", "EnvPool", "KeyRoomEnv", "ScienceWorldEnv", "StepResult", "TextEnv", "env_class"]
