"""EnvPool: environments are created on first need, reused, capped, and closed exactly once."""

import pytest

from empo2.envs import EnvPool, KeyRoomEnv


class CountingEnv(KeyRoomEnv):
    closed = 0

    def close(self) -> None:
        CountingEnv.closed += 1


def test_pool_reuses_caps_and_closes_once():
    CountingEnv.closed = 0
    pool = EnvPool(CountingEnv, {"num_rooms": 2}, max_size=3)
    first = pool.take(2)
    assert len(first) == 2 and pool.take(2) == first           # reused, not rebuilt
    assert len(pool.take(10)) == 3 and pool.take(10)[:2] == first  # grows to the cap only
    assert pool.first() is first[0]
    pool.close()
    pool.close()
    assert CountingEnv.closed == 3 and pool.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.take(1)


def test_pool_closes_when_dropped_and_names_bad_options():
    CountingEnv.closed = 0
    with EnvPool(CountingEnv) as pool:
        pool.take(2)
    assert CountingEnv.closed == 2
    pool = EnvPool(CountingEnv)
    pool.take(1)
    del pool  # the finalizer closes what nobody closed
    assert CountingEnv.closed == 3
    with pytest.raises(ValueError, match=r"^env.options: CountingEnv rejected"):
        EnvPool(CountingEnv, {"rooms": 2}).take(1)
