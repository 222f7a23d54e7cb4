"""Multi-step text environments: the protocol, the registry and the built-in ones."""

from empo2.envs.base import ENVS, StepResult, TextEnv, env_class
from empo2.envs.keyroom import KeyRoomEnv

__all__ = ["ENVS", "KeyRoomEnv", "StepResult", "TextEnv", "env_class"]
