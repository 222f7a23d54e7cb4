"""KeyRoom environment: layouts, scores, action mapping, splits, registry and user classes."""

import pytest

from empo2.envs import ENVS, KeyRoomEnv, TextEnv, env_class
from empo2.envs.keyroom import jaccard


def _solve(env: KeyRoomEnv, instance: str):
    """Walk to the target's room and focus on it (the oracle)."""
    env.reset(instance)
    rewards = []
    if env._room != env._target_room:
        rewards.append(env.step(f"go to {env._target_room}").reward)
    r = env.step(f"focus on {env._target}")
    rewards.append(r.reward)
    return rewards, r


def test_oracle_scores_100_and_exploration_is_needed():
    env = KeyRoomEnv()
    for inst in env.instances("train")[:20]:
        obs, info = env.reset(inst)
        assert env._target not in obs  # the target is never in the starting room
        rewards, last = _solve(env, inst)
        assert rewards == [50.0, 50.0] and last.done and last.info["success"]


def test_wrong_focus_fails_with_minus_100():
    env = KeyRoomEnv()
    env.reset("find/3")
    wrong = env._layout["hallway"][0]
    r = env.step(f"focus on {wrong}")
    assert r.reward == -100.0 and r.done and r.info["success"] is False


def test_success_only_reward_options():
    """room_bonus=0, failure_score=0: the return is 100 on success and 0 otherwise. With a bonus of
    30 and a failure score of −20, a wrong focus in the target's room is a step reward of −20 − 30."""
    env = KeyRoomEnv(room_bonus=0, failure_score=0)
    rewards, last = _solve(env, "find/3")
    assert rewards == [0.0, 100.0] and last.info["success"]
    env.reset("find/3")
    r = env.step(f"focus on {env._layout['hallway'][0]}")
    assert r.reward == 0.0 and r.done and r.info["success"] is False
    env = KeyRoomEnv(room_bonus=30, failure_score=-20)
    env.reset("find/3")
    assert env.step(f"go to {env._target_room}").reward == 30.0
    wrong = next(o for o in env._layout[env._target_room] if o != env._target)
    assert env.step(f"focus on {wrong}").reward == -50.0
    with pytest.raises(ValueError, match="room_bonus"):
        KeyRoomEnv(room_bonus=100)
    with pytest.raises(ValueError, match="failure_score"):
        KeyRoomEnv(failure_score=5)


def test_free_text_maps_to_the_closest_valid_action():
    env = KeyRoomEnv()
    env.reset("find/0")
    room = next(r for r in env._layout if r != "hallway")
    r = env.step(f"I think I should go to the {room}, please.")
    assert r.info == {"raw_valid": False, "valid": True, "action": f"go to {room}", "score": r.info["score"]}
    assert env._room == room
    nonsense = env.step("purple monkey dishwasher")
    assert nonsense.info["valid"] is False and nonsense.reward == 0.0 and not nonsense.done
    exact = env.step("look around")
    assert exact.info["raw_valid"] is True


def test_same_instance_same_layout_and_disjoint_splits():
    a, b = KeyRoomEnv(), KeyRoomEnv()
    a.reset("find/7"), b.reset("find/7")
    assert a._layout == b._layout and a._target == b._target
    env = KeyRoomEnv(num_train=5, num_test=3)
    assert set(env.instances("train")).isdisjoint(env.instances("test"))
    assert len(env.instances("test")) == 3


def test_bad_input_is_a_clear_error():
    env = KeyRoomEnv()
    with pytest.raises(ValueError, match="is no KeyRoom instance; they are find"):
        env.reset("cook/1")
    with pytest.raises(ValueError, match="unknown split"):
        env.instances("dev")
    with pytest.raises(ValueError, match="num_rooms"):
        KeyRoomEnv(num_rooms=99)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("look around")


def test_jaccard_by_hand():
    assert jaccard("go to kitchen", "go to the kitchen") == pytest.approx(3 / 4)
    assert jaccard("Focus on: apple!", "focus on apple") == 1.0
    assert jaccard("", "look around") == 0.0


class MyEnv(TextEnv):
    def instances(self, split):
        return ["only/0"]

    def reset(self, instance):
        return "hello", {}

    def step(self, action):
        raise NotImplementedError


def test_registry_and_user_class():
    assert env_class("keyroom") is KeyRoomEnv is ENVS.get("keyroom")
    assert env_class("ignored", f"{__name__}:MyEnv") is MyEnv
    with pytest.raises(ValueError, match="env.name: unknown environment 'nope'"):
        env_class("nope")
    with pytest.raises(ValueError, match="cannot import"):
        env_class("x", "no_such_module:Env")
    with pytest.raises(ValueError, match="not a subclass"):
        env_class("x", "builtins:dict")
