"""RolloutDataModule: every epoch regenerates its data with the current policy (one RL iteration).

Why a datamodule: Lightning users already know where data comes from, how it is checkpointed and
how it is torn down. Here `train_dataloader()` (reloaded every epoch) runs the iteration's data
phase: sample B instances × N rollouts, play them through the rollout engine, let callbacks add
what they own (intrinsic rewards, tips, memory writes), compute advantages, recompute old
log-probs with the trainer, and serve the per-step rows in shuffled mini-batches.

Determinism: iteration k reseeds torch/numpy/random from (seed, k, rank) before its rollout, and
the instance sampler's state is checkpointed, so k iterations + resume + k iterations equal 2k
iterations straight.

Callbacks take part through the hooks declared in `empo2.iteration_hooks` (subclass
`IterationCallback`): `on_rollout_start`, `on_rollout_end` before advantages (rewards may still
change), `on_rollout_scored` after (episodes are final), `rollout_metrics`, and `retrieve_tips` for
memory modes. Each hook gets a `RolloutContext` (trainer, module, engine, iteration).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from empo2 import distributed as D
from empo2.advantage import ADVANTAGES, CreditEpisode, CreditSettings, add_intrinsic_advantage
from empo2.config import Config
from empo2.conversation import PromptLayout
from empo2.engines import RolloutEngine, SamplingParams, build_engine
from empo2.envs import EnvPool, TextEnv
from empo2.episode import Episode
from empo2.iteration_hooks import IterationHooks, RolloutContext, TipRetriever, iteration_hooks
from empo2.modes import Mode, low_probability_keep, sample_modes, update_prompts
from empo2.peak_memory import PeakMemory
from empo2.rollout import RolloutStats, run_episodes
from empo2.training_rows import Segment, TrainingRow, mini_batches, segments


GAP_PROBE_ROWS = 16
"""Rows trained on another prompt than they were sampled with, re-scored for the gap metric."""


def keep_rows(segments: list[Segment]) -> list[Segment]:
    """Collate: segments stay python objects; the module builds tensors per micro-batch."""
    return segments


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    return (seed * 1_000_003 + iteration * 7919 + rank * 104_729) % (2**31 - 1)


class RolloutDataModule(L.LightningDataModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.pool = EnvPool.from_config(cfg.env)
        self.envs: list[TextEnv] = []
        self.engine: RolloutEngine | None = None
        self.train_instances: list[str] = []
        self.next_iteration = 0
        self.sampler = np.random.default_rng(cfg.seed)
        self.episodes: list[Episode] = []
        self.iteration_metrics: dict[str, float] = {}
        self.groups_per_rank = cfg.rollout.tasks_per_iteration
        self.learn = True
        """False: play and score episodes (hooks included) but build no training rows (adaptation)."""
        self.peak = PeakMemory()
        """Per-phase peak memory of the data phase (rollout, tips, old log-probs)."""

    # ------------------------------------------------------------------ lifecycle
    def setup(self, stage: str) -> None:
        if self.envs:
            return
        b, world = self.cfg.rollout.tasks_per_iteration, self.trainer.world_size if self.trainer else 1
        if b % world:
            raise ValueError(f"rollout.tasks_per_iteration: {b} groups cannot be shared evenly by {world} ranks")
        self.groups_per_rank = b // world
        n = self.groups_per_rank * self.cfg.rollout.group_size
        if self.pool.closed:
            self.pool = EnvPool(self.pool.cls, self.pool.options, self.pool.max_size)
        self.envs = self.pool.take(n)
        self.train_instances = list(self.cfg.env.train_instances or self.envs[0].instances("train"))
        if not self.train_instances:
            raise ValueError("env.train_instances: the training split is empty")

    def teardown(self, stage: str) -> None:
        self.pool.close()
        self.envs = []
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def state_dict(self) -> dict[str, Any]:
        return {"next_iteration": self.next_iteration, "sampler": self.sampler.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_iteration = int(state["next_iteration"])
        self.sampler.bit_generator.state = state["sampler"]

    # ------------------------------------------------------------------ engine
    def engine_for(self, module) -> RolloutEngine:
        """This rank's rollout engine (built on first use, shared with evaluation)."""
        if self.engine is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self.engine = build_engine(self.cfg, module.policy, module.tokenizer, self.cfg.run_dir / "engine" / f"rank{rank}")
        return self.engine

    # ------------------------------------------------------------------ one iteration's data
    def _my_share(self, items: list) -> list:
        """This rank's slice of a list drawn identically on every rank (groups are never split)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        k = self.groups_per_rank
        return items[rank * k:(rank + 1) * k]

    def sample_instances(self) -> list[str]:
        """The iteration's B instances (the sampler runs in lock-step on all ranks), this rank's share."""
        b = self.cfg.rollout.tasks_per_iteration
        pool = self.train_instances
        picks = self.sampler.choice(len(pool), size=b, replace=b > len(pool))
        return self._my_share([pool[i] for i in picks])

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        module = trainer.lightning_module
        iteration = trainer.current_epoch
        finished = trainer.max_epochs is not None and iteration >= trainer.max_epochs
        if iteration < self.next_iteration or finished:
            # Resuming from a checkpoint taken at an epoch's end, Lightning asks once more for the
            # data of that finished iteration before moving on: it must not be rolled out again.
            return self._placeholder()
        rank = trainer.global_rank
        seed = iteration_seed(self.cfg.seed, iteration, rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

        t0 = time.perf_counter()
        self.peak.reset()
        memory: dict[str, float] = {}
        engine = self.engine_for(module)
        engine.sync_weights()
        instances = self.sample_instances()
        modes = self._my_share(self.sample_modes(self.cfg.rollout.tasks_per_iteration))
        n = self.cfg.rollout.group_size
        episodes = [
            Episode(uid=f"{iteration}-{rank}-{b * n + k}", instance=inst, group=f"{iteration}-{rank}-{b}", mode=mode)
            for b, (inst, mode) in enumerate(zip(instances, modes)) for k in range(n)
        ]
        hooks = iteration_hooks(trainer.callbacks)
        ctx = RolloutContext(trainer, module, engine, iteration)
        for hook in hooks:
            hook.on_rollout_start(ctx)
        r = self.cfg.rollout
        params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, stop=list(r.stop))
        stats = run_episodes(
            self.envs, episodes, engine, module.tokenizer, params, r.max_prompt_tokens,
            max_turns=self.cfg.env.max_turns, tips_for=self._tip_source(episodes, trainer.callbacks),
            progress=self.cfg.logging.progress_bar and rank == 0,
            desc=f"iteration {iteration} rollout ({'/'.join(sorted(set(modes)))})",
            layout=self.prompt_layout(), env_threads=r.env_thread_count,
        )
        t1 = time.perf_counter()
        memory |= self.peak.metrics("rollout")
        self.peak.reset()
        for hook in hooks:
            hook.on_rollout_end(ctx, episodes)
        engine.release_memory()  # generation is over until the next iteration (tips included)
        memory |= self.peak.metrics("tips")
        t2 = time.perf_counter()
        self.assign_advantages(episodes)
        rows = self.build_rows(episodes, module.tokenizer) if self.learn else []
        t3 = time.perf_counter()
        self.peak.reset()
        segs = segments(rows, shared=self.cfg.optim.sequences == "shared")
        batches = self._batches(segs, seed)
        if batches:  # every rank joins (sharded forwards run in lock step), rows or not
            first_epoch = batches[: len(batches) // self.cfg.optim.ppo_epochs]
            self.add_old_logprobs(rows, module, [[segs[i] for i in b] for b in first_epoch])
        memory |= self.peak.metrics("old_logprob")
        t4 = time.perf_counter()
        for hook in hooks:
            hook.on_rollout_scored(ctx, episodes)
        self.episodes = episodes
        self.next_iteration = iteration + 1
        self.iteration_metrics = memory | self._metrics(episodes, rows, segs, stats, hooks, rollout_s=t1 - t0,
                                                        hooks_s=t2 - t1, logprob_s=t4 - t3)
        if not batches:  # every episode on every rank failed before acting: skip this update
            return self._placeholder()
        return DataLoader(segs, batch_sampler=batches, collate_fn=keep_rows)

    @staticmethod
    def _placeholder() -> DataLoader:
        """One empty batch: the fit loop keeps going and `training_step` does nothing with it."""
        return DataLoader([], batch_sampler=[[]], collate_fn=keep_rows)

    def prompt_layout(self) -> PromptLayout:
        return replace(self.cfg.rollout.prompt_layout, tips_scope=self.cfg.memory.tips_in_history)

    def sample_modes(self, n_groups: int) -> list[Mode]:
        """This iteration's modes (EMPO2.md §2, `empo2.modes.sample_modes`) from the run's generator."""
        m = self.cfg.mode
        return sample_modes(lambda: float(self.sampler.random()), m.p, m.q, m.granularity, n_groups)

    @staticmethod
    def _tip_source(episodes: list[Episode], callbacks: list[Any]):
        if not any(ep.uses_memory for ep in episodes):
            return None
        for cb in callbacks:
            if isinstance(cb, TipRetriever):
                return cb.retrieve_tips
        raise RuntimeError("a memory-mode iteration needs a callback with retrieve_tips (memory.enabled=true)")

    def assign_advantages(self, episodes: list[Episode]) -> None:
        """Run `algo.advantage` over the iteration's episodes; each step gets its advantage. Under
        `intrinsic.combine: advantage` it runs twice, on extrinsic and on (unscaled) intrinsic
        rewards, joined by `add_intrinsic_advantage`."""
        a, bonus = self.cfg.algo, self.cfg.intrinsic
        state_key = self.envs[0].state_key if self.envs else str

        def credit(reward, episode_return=None) -> list[CreditEpisode]:
            return [CreditEpisode(
                group=ep.group,
                episode_return=episode_return(ep) if episode_return else sum(a.gamma ** t * reward(s) for t, s in enumerate(ep.steps)),
                rewards=tuple(reward(s) for s in ep.steps),
                states=tuple(state_key(ep.observations[t]) if t < len(ep.observations) else "" for t in range(len(ep.steps))),
                actions=tuple(s.action for s in ep.steps),
            ) for ep in episodes]

        settings = CreditSettings(eps=a.adv_eps, step_gamma=a.step_gamma, step_weight=a.step_weight,
                                  step_norm=a.step_norm, history_levels=a.history_levels, level_alpha=a.level_alpha,
                                  episode_level=a.hgpo_episode_level)
        estimator = ADVANTAGES.get(a.advantage)
        if bonus.combine == "advantage" and bonus.kind != "none" and bonus.coef > 0:
            advantages = add_intrinsic_advantage(
                estimator(credit(lambda s: s.reward), settings),
                estimator(credit(lambda s: s.intrinsic / bonus.coef), settings), bonus.coef)
        else:
            advantages = estimator(credit(lambda s: s.reward + s.intrinsic, lambda ep: ep.discounted_return(a.gamma)), settings)
        for ep, adv in zip(episodes, advantages):
            ep.advantage = adv[0]
            ep.step_advantages = list(adv[:len(ep.steps)])

    def build_rows(self, episodes: list[Episode], tokenizer) -> list[TrainingRow]:
        """One training row per step (episode and step order), carrying its step's advantage (the
        episode's, for episode-level estimators).

        Which prompt each log-prob is taken on is `empo2.modes.update_prompts` (EMPO2.md §6.3);
        `tipfree_prompt` is where the low-probability mask is decided (§6.4)."""
        budget = self.cfg.rollout.max_prompt_tokens
        rows = []
        for ep in episodes:
            tipfree_prompts = ep.step_prompts(tokenizer, budget, with_tips=False) if ep.uses_memory else None
            for i, s in enumerate(ep.steps):
                if not s.response_ids:
                    continue
                tipfree = tipfree_prompts[i] if tipfree_prompts is not None else s.prompt_ids
                use = update_prompts(ep.mode, s.prompt_ids, tipfree, mask_level=self.cfg.mask.level,
                                     mask_apply_to=self.cfg.mask.apply_to, old_logprob=self.cfg.offpolicy.old_logprob)
                rows.append(TrainingRow(
                    episode=ep.uid, mode=ep.mode, rollout_prompt=s.prompt_ids, train_prompt=use.train,
                    old_prompt=use.old, tipfree_prompt=tipfree, response_ids=s.response_ids,
                    engine_logprobs=s.engine_logprobs, advantage=ep.advantage_at(i), masked=use.masked,
                    old_on_rollout_prompt=use.old_is_rollout,
                ))
        return rows

    def add_old_logprobs(self, rows: list[TrainingRow], module, first_epoch: list[list[Segment]]) -> None:
        """log π_old on each row's old prompt, and the keep-mask from the tip-free log-probs.

        Every row is first scored on its train prompt in the first PPO epoch's mini-batches, cut
        into micro-batches exactly as the update will cut them (`segment_logprobs`), so a row whose
        old prompt is its train prompt starts the update at a ratio of exactly 1 on any CPU. Only
        the prompts that differ from the train prompt (π_old with tips, tip-free prompts of
        rows trained with tips, gap probes) take a second, batched pass over distinct pairs."""
        temperature = self.cfg.rollout.temperature
        scored = module.segment_logprobs(first_epoch, temperature)
        on_train = {id(r): lp for seg in (s for mb in first_epoch for s in mb)
                    for r, lp in zip(seg.rows, scored[id(seg)])}
        wanted: dict[tuple, int] = {}
        prompts: list[list[int]] = []
        responses: list[list[int]] = []

        def want(row: TrainingRow, prompt: list[int]) -> int:
            """-1: the train prompt's log-probs serve; else the pair's index in the second pass."""
            if prompt == row.train_prompt:
                return -1
            key = (tuple(prompt), tuple(row.response_ids))
            if key not in wanted:
                wanted[key] = len(prompts)
                prompts.append(prompt)
                responses.append(row.response_ids)
            return wanted[key]

        # The engine/trainer gap is measured on the prompt the engine sampled with; rows trained on
        # another prompt (off-policy) add a few rollout-prompt passes just for that diagnostic.
        for row in [r for r in rows if not r.old_on_rollout_prompt][:GAP_PROBE_ROWS]:
            row.gap_probe = True
        old_at = [want(r, r.old_prompt) for r in rows]
        tipfree_at = [want(r, r.tipfree_prompt) if r.masked else -1 for r in rows]
        probe_at = [want(r, r.rollout_prompt) if r.gap_probe else -1 for r in rows]
        logps = module.compute_logprobs(prompts, responses, temperature)  # empty: still joins sharded ranks

        def at(row: TrainingRow, index: int) -> list[float]:
            return on_train[id(row)] if index < 0 else logps[index]

        if self.cfg.algo.kl_coef > 0:  # log π_ref on the train prompt, in the update's micro-batches
            refs = module.segment_logprobs(first_epoch, temperature, reference=True)
            for seg in (s for mb in first_epoch for s in mb):
                for row, ref in zip(seg.rows, refs[id(seg)]):
                    row.ref_logprobs = ref
        m = self.cfg.mask
        for row, o, t, p in zip(rows, old_at, tipfree_at, probe_at):
            row.old_logprobs = at(row, o)
            row.rollout_prompt_logprobs = row.old_logprobs if row.old_on_rollout_prompt else at(row, p) if row.gap_probe else None
            row.keep = low_probability_keep(at(row, t), m.log_delta, m.level) if row.masked else [1.0] * len(row.response_ids)

    def _batches(self, segs: list[Segment], seed: int) -> list[list[int]]:
        """Shuffled mini-batches of segments. `optim.mini_batch_size` counts rows over all ranks:
        every rank cuts its segments into the same number of optimizer steps, ceil(global rows /
        mini-batch size), so ranks stay in step (a rank may contribute an empty share to a step)."""
        o = self.cfg.optim
        counts = [len(seg.rows) for seg in segs]
        total = sum(D.gather_objects(sum(counts)))
        return mini_batches(counts, total, o.mini_batch_size, o.ppo_epochs, torch.Generator().manual_seed(seed))

    def _metrics(self, episodes, rows: list[TrainingRow], segs: list[Segment], stats: RolloutStats,
                 hooks: list[IterationHooks], rollout_s: float,
                 hooks_s: float, logprob_s: float) -> dict[str, float]:
        n = max(len(episodes), 1)
        # engine vs trainer on the same prompt (rows whose old prompt is the rollout prompt)
        gaps = [abs(e - o) for row in rows if row.rollout_prompt_logprobs is not None
                for e, o in zip(row.engine_logprobs, row.rollout_prompt_logprobs)]
        extra: dict[str, float] = dict(self.engine.metrics()) if self.engine is not None else {}
        for hook in hooks:
            extra.update(hook.rollout_metrics())
        modes = [ep.mode for ep in episodes]
        for mode in Mode:
            extra[f"mode/{mode.value}"] = modes.count(mode) / n
        return extra | {
            "rollout/return": sum(ep.extrinsic_return for ep in episodes) / n,
            "rollout/intrinsic_return": sum(ep.intrinsic_return for ep in episodes) / n,
            "rollout/success_rate": sum(ep.success for ep in episodes) / n,
            "rollout/episode_length": sum(len(ep.steps) for ep in episodes) / n,
            "rollout/truncated_rate": sum(ep.truncated for ep in episodes) / n,
            "rollout/raw_valid_action_rate": stats.raw_valid_actions / max(stats.turns, 1),
            "rollout/malformed_rate": stats.malformed / max(stats.turns, 1),
            "rollout/generated_tokens": float(stats.generated_tokens),
            "rollout/gen_tokens_per_s": stats.generated_tokens / max(stats.generation_s, 1e-9),
            "rollout/dropped_history_turns": float(stats.dropped_turns),
            "rollout/prompts_too_long": float(stats.prompts_too_long),
            "rollout/env_errors": float(stats.env_errors),
            "rollout/rows": float(len(rows)),
            "rollout/segments": float(len(segs)),
            "rollout/sequence_tokens": float(sum(len(seg.sequence) for seg in segs)),
            "rollout/per_step_tokens": float(sum(len(r.train_prompt) + len(r.response_ids) for r in rows)),
            "rollout/advantage_abs_mean": sum(abs(r.advantage) for r in rows) / max(len(rows), 1),
            "rollout/step_advantage_spread": _step_advantage_spread(episodes),
            "train/engine_logprob_gap": sum(gaps) / max(len(gaps), 1),
            "time/rollout_s": rollout_s,
            "time/generation_s": stats.generation_s,
            "time/env_s": stats.env_s,
            "time/rollout_hooks_s": hooks_s,
            "time/old_logprob_s": logprob_s,
        }


def _step_advantage_spread(episodes: list[Episode]) -> float:
    """Mean over episodes of two or more steps of (largest − smallest) step advantage: 0 under
    episode-level estimators, how much step-level credit separates an episode's steps otherwise."""
    spreads = [max(a) - min(a) for a in (ep.step_advantages for ep in episodes) if len(a) > 1]
    return sum(spreads) / len(spreads) if spreads else 0.0
