"""Plays a batch of episodes with the current policy, all environments advancing in lock-step.

Why lock-step batches: generation is the expensive part, and it is far cheaper per token in large
batches. Each turn, every still-running episode contributes one prompt; the engine answers them
all in one call; each environment then takes its step. Finished episodes drop out of the batch
and free their environment for the next waiting episode (a pool smaller than the batch of
episodes bounds the number of simulator processes, e.g. JVMs, without idling the engine).

An environment that raises during `reset` or `step` ends only its own episode, marked truncated
with the error kept, and the rollout goes on (the environment may replace its own process).

Environments in parallel (`rollout.env_threads`): between two generation calls the model is idle
and each environment (a ScienceWorld JVM, a process of its own) waits its turn. A turn's calls go
out on threads at once, and their results are taken in the serial order, so nothing but the wall
time changes. Pure-Python environments gain nothing (the interpreter lock), and lose nothing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from empo2.conversation import PromptLayout
from empo2.engines.base import RolloutEngine, SamplingParams
from empo2.envs.base import TextEnv
from empo2.episode import Episode, Step

# (episodes still running) -> tips to show at their current step, one list per episode
TipSource = Callable[[list[Episode]], list[list[str]]]


@dataclass
class RolloutStats:
    generated_tokens: int = 0
    generation_s: float = 0.0
    env_s: float = 0.0
    """Seconds in the environments: resets (with the first message) and steps."""
    prompt_s: float = 0.0
    tips_s: float = 0.0
    turns: int = 0
    raw_valid_actions: int = 0
    malformed: int = 0
    """Answers the environment's `parse_action` called malformed (penalised by its format_penalty)."""
    dropped_turns: int = 0
    prompts_too_long: int = 0
    env_errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)


MAX_ACTION_CHARS = 2000
"""Longest action sent to an environment (and kept in the chat history). A parsed answer can be as
long as the generation budget allows (WebShop: 512 tokens, echoed back in the next page); the cap
keeps one runaway answer from filling every later prompt."""


def run_episodes(
    envs: Sequence[TextEnv],
    episodes: list[Episode],
    engine: RolloutEngine,
    tokenizer,
    params: SamplingParams,
    max_prompt_tokens: int,
    max_turns: Optional[int] = None,
    tips_for: Optional[TipSource] = None,
    progress: bool = False,
    desc: str = "rollout",
    layout: PromptLayout = PromptLayout(),
    max_action_chars: int = MAX_ACTION_CHARS,
    env_threads: int = 1,
) -> RolloutStats:
    """Play every episode to its end or turn cap; fills the episodes in place. `layout` decides how
    prompts are built (with the defaults, each step's prompt is a prefix of the next one's).

    With fewer environments than episodes, each environment takes the next waiting episode as
    soon as its current one ends, so the generation batch stays as full as the pool allows.
    `env_threads` > 1: a turn's resets and steps run on that many threads at once where the
    environments allow it (`TextEnv.steps_on_threads`); each episode's calls still go to its own
    environment in order, so trajectories are those of the serial path."""
    if not envs:
        raise ValueError("run_episodes needs at least one environment")
    threaded = env_threads > 1 and all(env.steps_on_threads for env in envs)
    with ThreadPoolExecutor(env_threads) if threaded else nullcontext() as pool:
        return _play(envs, episodes, engine, tokenizer, params, max_prompt_tokens, max_turns, tips_for,
                     progress, desc, layout, max_action_chars, EnvCalls(pool))


class EnvCalls:
    """Calls into several environments at once (each on its own thread) or one after another;
    results, or the exception a call raised, come back in the order the calls were given."""

    def __init__(self, pool: ThreadPoolExecutor | None) -> None:
        self.pool = pool

    @staticmethod
    def _guarded(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - one broken env must not end the run
            return err

    def run(self, calls: list[Callable[[], Any]]) -> list[Any]:
        if self.pool is None or len(calls) < 2:
            return [self._guarded(c) for c in calls]
        return list(self.pool.map(self._guarded, calls))


def _play(envs, episodes, engine, tokenizer, params, max_prompt_tokens, max_turns, tips_for, progress, desc,
          layout, max_action_chars, env_calls: EnvCalls) -> RolloutStats:
    stats = RolloutStats()
    waiting = list(range(len(episodes)))[::-1]  # popped from the end: episodes start in order
    slot_of: dict[int, int] = {}  # episode index -> environment index
    caps: dict[int, int] = {}
    free = list(range(len(envs)))[::-1]
    active: list[int] = []
    bar = tqdm(total=len(episodes), desc=desc, unit="ep", disable=not progress, leave=False)

    def start_waiting() -> None:
        while free and waiting:
            starts = [(waiting.pop(), free.pop()) for _ in range(min(len(free), len(waiting)))]
            te = time.perf_counter()
            outcomes = env_calls.run([lambda i=i, slot=slot: envs[slot].reset(episodes[i].instance) for i, slot in starts])
            stats.env_s += time.perf_counter() - te
            for (i, slot), outcome in zip(starts, outcomes):
                ep, env = episodes[i], envs[slot]
                caps[i] = max_turns or env.max_turns(ep.instance)
                if isinstance(outcome, Exception):
                    ep.truncated, ep.error = True, f"reset: {type(outcome).__name__}: {outcome}"
                    stats.env_errors += 1
                    bar.update(1)
                    free.append(slot)
                    continue
                obs, info = outcome
                ep.conversation = layout.start(env.turn_instruction(), env.prompt_history)
                ep.conversation.add_user(env.first_message(obs, info))
                ep.task = str(info.get("task") or ep.instance)
                ep.observations = [obs]
                slot_of[i] = slot
                active.append(i)

    def finish(i: int) -> None:
        free.append(slot_of.pop(i))
        bar.update(1)

    start_waiting()
    while active:
        batch = [episodes[i] for i in active]
        t0 = time.perf_counter()
        tips = tips_for(batch) if tips_for is not None else [[] for _ in batch]
        t1 = time.perf_counter()
        for ep, ep_tips in zip(batch, tips):
            ep.conversation.messages[-1].tips = list(ep_tips)
        rendered = [ep.conversation.render(tokenizer, max_prompt_tokens) for ep in batch]
        t2 = time.perf_counter()
        gens = engine.generate([r.ids for r in rendered], params)
        t3 = time.perf_counter()
        stats.tips_s += t1 - t0
        stats.prompt_s += t2 - t1
        stats.generation_s += t3 - t2
        parsed = [envs[slot_of[i]].parse_action(gen.text) for i, gen in zip(active, gens)]
        actions = [action[:max_action_chars] for action, _ in parsed]  # what reaches the environment and every later prompt
        te = time.perf_counter()
        outcomes = env_calls.run([lambda env=envs[slot_of[i]], a=a: env.step(a) for i, a in zip(active, actions)])
        stats.env_s += time.perf_counter() - te
        still: list[int] = []
        for i, ep, rend, gen, ep_tips, action, (_, well_formed), result in zip(
                active, batch, rendered, gens, tips, actions, parsed, outcomes):
            env = envs[slot_of[i]]
            stats.generated_tokens += len(gen.token_ids)
            stats.turns += 1
            stats.dropped_turns += rend.dropped_turns
            stats.prompts_too_long += int(rend.too_long)
            if isinstance(result, Exception):
                ep.truncated, ep.error = True, f"step: {type(result).__name__}: {result}"
                stats.env_errors += 1
                finish(i)
                continue
            stats.raw_valid_actions += int(bool(result.info.get("raw_valid", False)))
            stats.malformed += int(not well_formed)
            reward = float(result.reward) - (0.0 if well_formed else env.format_penalty)
            ep.steps.append(Step(
                prompt_ids=rend.ids, response_ids=gen.token_ids, engine_logprobs=gen.logprobs,
                response_text=gen.text, action=action, observation=result.observation,
                reward=reward, info={**result.info, "well_formed": well_formed}, tips=list(ep_tips),
                dropped_turns=rend.dropped_turns, n_messages=len(ep.conversation.messages), retrieved=len(ep_tips),
            ))
            ep.conversation.add_assistant(action, token_ids=gen.token_ids)
            if result.done:
                ep.success = bool(result.info.get("success", False))
                finish(i)
            elif len(ep.steps) >= caps[i]:
                ep.truncated = True
                finish(i)
            else:
                ep.conversation.add_user(env.next_message(result.observation, result.info))
                ep.observations.append(result.observation)
                still.append(i)
        active = still
        start_waiting()
        # Episodes of a lock-step batch end together near the turn cap: without the steps taken the
        # bar would sit at 0/N for most of a rollout and read as stalled.
        bar.set_postfix_str(f"{stats.turns} steps, {len(active)} playing", refresh=True)
    bar.close()
    return stats
