"""run_episodes: lock-step play, a pool smaller than the batch, and broken environments."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import KEYROOM_OPTIONS
from empo2.engines import HFEngine, SamplingParams
from empo2.envs import KeyRoomEnv
from empo2.episode import Episode
from empo2.rollout import run_episodes


class RecordingEnv(KeyRoomEnv):
    """KeyRoom that logs every action under the instance it was last reset to, and refuses find/7."""

    def __init__(self, **options):
        super().__init__(**options)
        self.log: dict[str, list[str]] = {}
        self.current = ""

    def reset(self, instance):
        if instance == "find/7":
            raise OSError("simulator refused to start")
        self.current = instance
        self.log[instance] = []
        return super().reset(instance)

    def step(self, action):
        self.log[self.current].append(action)
        return super().step(action)


@pytest.fixture(scope="module")
def engine(warm_model, tokenizer):
    return HFEngine(AutoModelForCausalLM.from_pretrained(warm_model), tokenizer)


def play(engine, tokenizer, n_envs, instances, max_turns=3):
    envs = [RecordingEnv(**KEYROOM_OPTIONS) for _ in range(n_envs)]
    episodes = [Episode(uid=str(i), instance=inst, group=inst) for i, inst in enumerate(instances)]
    torch.manual_seed(0)
    stats = run_episodes(envs, episodes, engine, tokenizer, SamplingParams(8, 1.0, ["\n"]), 1024, max_turns=max_turns)
    return envs, episodes, stats


def test_smaller_pool_plays_every_episode_on_its_own_environment(engine, tokenizer):
    instances = [f"find/{i}" for i in range(6)]
    envs, episodes, stats = play(engine, tokenizer, 2, instances)
    assert stats.env_errors == 0 and stats.turns == sum(len(ep.steps) for ep in episodes)
    owner = {inst: env for env in envs for inst in env.log}
    assert sorted(owner) == instances and all(len(env.log) >= 2 for env in envs)  # both reused
    for ep in episodes:
        assert 1 <= len(ep.steps) <= 3 and (ep.steps[-1].info.get("success") is not None or ep.truncated)
        # the environment saw exactly this episode's actions: no two episodes shared it at once
        assert owner[ep.instance].log[ep.instance] == [s.action for s in ep.steps]


def test_a_refused_reset_frees_its_environment(engine, tokenizer):
    envs, episodes, stats = play(engine, tokenizer, 1, ["find/7", "find/1", "find/2"])
    assert episodes[0].truncated and "simulator refused" in episodes[0].error and not episodes[0].steps
    assert stats.env_errors == 1 and all(ep.steps for ep in episodes[1:])
    assert list(envs[0].log) == ["find/1", "find/2"]


def test_no_environment_is_an_error(engine, tokenizer):
    with pytest.raises(ValueError, match="at least one environment"):
        run_episodes([], [Episode("0", "find/0", "g")], engine, tokenizer, SamplingParams(4, 1.0, []), 256)


class WholeAnswerEnv(RecordingEnv):
    """Sends the model's whole answer as the action (no first-line parsing)."""

    def parse_action(self, text):
        return text, True


def test_actions_are_capped_before_the_environment_and_the_history(engine, tokenizer):
    envs = [WholeAnswerEnv(**KEYROOM_OPTIONS)]
    episodes = [Episode(uid="0", instance="find/1", group="g")]
    torch.manual_seed(0)
    run_episodes(envs, episodes, engine, tokenizer, SamplingParams(24, 1.0, []), 1024, max_turns=2, max_action_chars=5)
    sent = envs[0].log["find/1"]
    assert sent and all(len(a) <= 5 for a in sent)
    assert any(len(s.response_text) > 5 for s in episodes[0].steps)  # the answers were longer than the cap
    history = [m.content for m in episodes[0].conversation.messages if m.role == "assistant"]
    assert history == sent[:len(history)] and [s.action for s in episodes[0].steps] == sent


@pytest.mark.parametrize("n_envs", [2, 6])
def test_environments_on_threads_play_the_serial_trajectories(engine, tokenizer, n_envs):
    """Resets and steps on 4 threads (a refused reset among them): every episode, its prompts,
    responses, actions, rewards and errors, as on one thread under the same seed."""
    instances = ["find/7", "find/1", "find/2", "find/3", "find/4", "find/5"]
    played = []
    for threads in (1, 4):
        envs = [RecordingEnv(**KEYROOM_OPTIONS) for _ in range(n_envs)]
        episodes = [Episode(uid=str(i), instance=inst, group=inst) for i, inst in enumerate(instances)]
        torch.manual_seed(0)
        stats = run_episodes(envs, episodes, engine, tokenizer, SamplingParams(8, 1.0, ["\n"]), 1024, max_turns=3,
                             env_threads=threads)
        played.append(([(ep.error, ep.truncated, ep.success, [(s.prompt_ids, s.response_ids, s.action, s.reward)
                                                              for s in ep.steps]) for ep in episodes],
                       stats.turns, stats.env_errors))
    assert played[0][2] == 1 and played[0][1] >= 5  # the refused reset; every other episode took turns
    assert played[1] == played[0]


class ThreadNotingEnv(KeyRoomEnv):
    def __init__(self, **options):
        super().__init__(**options)
        self.threads: set[int] = set()

    def step(self, action):
        import threading

        self.threads.add(threading.get_ident())
        return super().step(action)


class SharedStateEnv(ThreadNotingEnv):
    steps_on_threads = False  # as an environment whose instances share a tokenizer or an index declares


@pytest.mark.parametrize("cls, on_threads", [(ThreadNotingEnv, True), (SharedStateEnv, False)])
def test_only_environments_that_share_nothing_step_on_threads(engine, tokenizer, cls, on_threads):
    import threading

    envs = [cls(**KEYROOM_OPTIONS) for _ in range(3)]
    episodes = [Episode(uid=str(i), instance=f"find/{i}", group="g") for i in range(3)]
    run_episodes(envs, episodes, engine, tokenizer, SamplingParams(8, 1.0, ["\n"]), 1024, max_turns=2, env_threads=3)
    used = set().union(*(env.threads for env in envs))
    assert used and (used != {threading.get_ident()}) == on_threads  # (a lone call runs on the caller's thread)
