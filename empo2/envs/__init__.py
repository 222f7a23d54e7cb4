"""Multi-step text environments: the protocol, the registry and the built-in ones."""

from empo2.envs.base import ENVS, StepResult, TextEnv, env_class
from empo2.envs.keyroom import KeyRoomEnv
from empo2.envs.pool import EnvPool
from empo2.envs.sciworld import ScienceWorldEnv
from empo2.envs.webshop import WebShopEnv

__all__ = ["ENVS", "EnvPool", "KeyRoomEnv", "ScienceWorldEnv", "StepResult", "TextEnv", "WebShopEnv", "env_class"]
