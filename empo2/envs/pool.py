"""A pool of long-lived environment objects, the one owner of their processes.

Why a pool: an environment such as ScienceWorld is a JVM that costs a second and ~340 MB to start
but milliseconds to load a new episode into. The pool creates environment objects on first need,
hands the same ones out for every iteration (training and evaluation alike), and closes every one
of them exactly once: on `close()`, on leaving a `with` block, or when the interpreter exits
(a finalizer), so a crashed run leaves no simulator process behind.

The pool may be smaller than the number of episodes played at once: the rollout then starts each
waiting episode as soon as an environment frees up (`empo2.rollout.run_episodes`).
"""

from __future__ import annotations

import weakref
from typing import Any

from empo2.envs.base import TextEnv


def _close_all(envs: list[TextEnv]) -> None:
    while envs:
        env = envs.pop()
        try:
            env.close()
        except Exception:  # noqa: BLE001 - closing the others matters more than one error
            pass


class EnvPool:
    def __init__(self, cls: type[TextEnv], options: dict[str, Any] | None = None, max_size: int = 0) -> None:
        """`max_size` 0: no limit (as many environments as are asked for at once)."""
        self.cls, self.options, self.max_size = cls, dict(options or {}), max_size
        self.envs: list[TextEnv] = []
        self._finalizer = weakref.finalize(self, _close_all, self.envs)

    @classmethod
    def from_config(cls, env: Any, max_size: int | None = None, options: dict[str, Any] | None = None) -> "EnvPool":
        """The pool of the `env.*` config section: its environment class, `env.options` (or `options`)
        and `env.pool_size` (or `max_size`)."""
        from empo2.envs.base import env_class

        return cls(env_class(env.name, env.cls), env.options if options is None else options,
                   env.pool_size if max_size is None else max_size)

    def _new(self) -> TextEnv:
        try:
            return self.cls(**self.options)
        except (TypeError, ValueError, KeyError) as err:  # an option it rejects: name the config key
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"env.options: {self.cls.__name__} rejected the options {self.options}: {msg}") from None

    def take(self, n: int) -> list[TextEnv]:
        """Up to `n` environments (at most `max_size`), created on first need and then reused."""
        if not self._finalizer.alive:
            raise RuntimeError("the environment pool is closed")
        want = max(1, min(n, self.max_size) if self.max_size else n)
        while len(self.envs) < want:
            self.envs.append(self._new())
        return self.envs[:want]

    def first(self) -> TextEnv:
        """One environment (to list instances, for example)."""
        return self.take(1)[0]

    def close(self) -> None:
        """Close every environment (and its process); idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
