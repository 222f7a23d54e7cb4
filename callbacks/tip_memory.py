"""TipMemory: the agent writes a tip after every training episode; memory modes retrieve them.

Why a callback: tip writing is a side phase of every iteration (in every mode, EMPO2.md §2 step 3)
with its own state on disk (the LanceDB memory in `<run_dir>/memory`), its own cost, and its own
checkpoint state (the memory table version). Keeping it here leaves the datamodule ignorant of
memory: it only asks callbacks for tips (`retrieve_tips`) and lets them see finished rollouts.

Multi-rank: every rank generates the tips of its own episodes; the entries (as texts) are gathered
to rank 0, which embeds and writes them once; the other ranks reload the table before the next
rollout, so all ranks retrieve from the same memory. A checkpoint records the table version, and
resuming restores exactly that version.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

from empo2 import distributed as D
from empo2.config import Config
from empo2.conversation import Conversation, Message, turn_glue
from empo2.embedder import shared_embedder
from empo2.engines import SamplingParams
from empo2.episode import Episode
from empo2.iteration_hooks import RolloutContext
from empo2.memory import MemoryStore, entry_content, memory_dir
from empo2.trace_tips import trace_tip

from callbacks.versioned_store import VersionedStoreCallback

TIP_REQUEST = (
    "The episode is over. Write one sentence (under 100 words) for your future self about this attempt: "
    "what you learned about the task and where things are, and how close you came to completing it."
)


def clean_tip(text: str) -> str:
    """One line of plain text; empty when the model produced nothing usable."""
    text = re.sub(r"\s+", " ", text.replace("<tip>", "").replace("</tip>", "")).strip()
    return text if re.search(r"[A-Za-z]", text) else ""


def tip_request(ep: Episode) -> str:
    """The last user message of a tip prompt: the final observation, then the request."""
    final = ep.steps[-1].observation if ep.steps else ""
    return f"{final}\n\n{TIP_REQUEST}".strip()


def tip_conversation(ep: Episode) -> Conversation:
    """The episode as a chat of its parsed actions (no tips, no per-turn instruction), its final
    observation, and the request for a tip (`memory.tip_prompt: transcript`)."""
    msgs = [Message(m.role, m.content) for m in ep.conversation.messages]
    msgs.append(Message("user", tip_request(ep)))
    return Conversation(msgs)


def tip_prompt(ep: Episode, tokenizer, max_tokens: int, form: str = "episode") -> list[int]:
    """Token ids of the prompt that asks the policy for `ep`'s tip (`memory.tip_prompt`). `episode`:
    the last step's prompt and response as sampled, then the chat template's glue and the request, as
    the next turn's prompt would have been; where the episode was shown tips, played a one-message
    layout, or would exceed `max_tokens`, the transcript form."""
    last = ep.steps[-1] if ep.steps else None
    if (form == "episode" and last is not None and ep.conversation.history == "chat"
            and not any(step.tips for step in ep.steps)):
        ids = last.prompt_ids + last.response_ids + turn_glue(tokenizer, tip_request(ep), last.response_ids)
        if len(ids) <= max_tokens:
            return ids
    return tip_conversation(ep).render(tokenizer, max_tokens, with_tips=False).ids


class TipMemory(VersionedStoreCallback):
    state_name = "memory_version"

    def __init__(self, cfg: Config, run_dir: str | Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.folder = memory_dir(run_dir)
        self.stats: dict[str, float] = {}
        self._reset_stats()
        self._slots: set[str] = set()
        """Instances with tips in memory when the iteration's rollout started."""
        self._warned = False

    def open_store(self) -> MemoryStore:
        m = self.cfg.memory
        self.embedder = shared_embedder("cpu", m.embed_batch_size)
        return MemoryStore(self.folder, m.threshold, m.top_k, m.capacity)

    def _reset_stats(self) -> None:
        self.stats = {"retrieval_s": 0.0, "write_s": 0.0, "tip_generation_s": 0.0, "tips": 0.0,
                      "empty_tips": 0.0, "entries_written": 0.0, "retrieved": 0.0, "retrieval_calls": 0.0,
                      "calls_without_slot": 0.0}

    # ------------------------------------------------------------------ keys
    def key_text(self, ep: Episode, step: int) -> str:
        """The text embedded for step `step` of `ep` (its memory key or retrieval query)."""
        if self.cfg.memory.key == "history":
            n = ep.steps[step].n_messages if step < len(ep.steps) else len(ep.conversation.messages)
            return "\n".join(m.content for m in ep.conversation.messages[:n])
        return f"{ep.task}\n{ep.observations[step]}"

    # ------------------------------------------------------------------ hooks used by the datamodule
    def on_rollout_start(self, ctx: RolloutContext) -> None:
        self._reset_stats()
        super().on_rollout_start(ctx)
        self._slots = set(self.store.counts()) if self.store is not None else set()

    def retrieve_tips(self, episodes: list[Episode]) -> list[list[str]]:
        """Tips for the current step of each episode (memory-mode episodes only)."""
        t0 = time.perf_counter()
        out: list[list[str]] = [[] for _ in episodes]
        idx = [i for i, ep in enumerate(episodes) if ep.uses_memory]
        if idx and self.store is not None:
            texts = [self.key_text(episodes[i], len(episodes[i].steps)) for i in idx]
            keys = self.embedder.encode(texts)
            found = self.store.retrieve([episodes[i].instance for i in idx], keys)
            self.stats["calls_without_slot"] += sum(episodes[i].instance not in self._slots for i in idx)
            for i, tips in zip(idx, found):
                out[i] = [t.content for t in tips]
                self.stats["retrieved"] += len(tips)
            self.stats["retrieval_calls"] += len(idx)
        self.stats["retrieval_s"] += time.perf_counter() - t0
        return out

    def on_rollout_end(self, ctx: RolloutContext, episodes: list[Episode]) -> None:
        t0 = time.perf_counter()
        played = [ep for ep in episodes if ep.steps]
        tips = self.generate_tips(ctx, played)
        t1 = time.perf_counter()
        slots, texts, contents, scores = [], [], [], []
        for ep, tip in zip(played, tips):
            ep.tip = tip
            if not tip:
                self.stats["empty_tips"] += 1
                continue
            for i, step in enumerate(ep.steps):
                slots.append(ep.instance)
                texts.append(self.key_text(ep, i))
                contents.append(entry_content(tip, step.action, ep.extrinsic_return))
                scores.append(ep.extrinsic_return)
        self.stats["tips"] += sum(bool(t) for t in tips)
        gathered = D.gather_objects((slots, texts, contents, scores))
        if D.rank() == 0:
            assert self.store is not None
            all_slots = [s for g in gathered for s in g[0]]
            all_texts = [t for g in gathered for t in g[1]]
            all_contents = [c for g in gathered for c in g[2]]
            all_scores = [x for g in gathered for x in g[3]]
            keys = self.embedder.encode(all_texts)
            self.stats["entries_written"] += self.store.write(all_slots, keys, all_contents, all_scores)
        self.stats["tip_generation_s"] += t1 - t0
        self.stats["write_s"] += time.perf_counter() - t1

    def generate_tips(self, ctx: RolloutContext, episodes: list[Episode]) -> list[str]:
        """One tip per episode: with the current policy, in one batched call of the iteration's engine
        (`memory.tip_source: model`), or from the episode's record without the model (`trace`)."""
        if not episodes:
            return []
        if self.cfg.memory.tip_source == "trace":
            return [trace_tip(ep) for ep in episodes]
        m = self.cfg.memory
        prompts = [tip_prompt(ep, ctx.tokenizer, self.cfg.tip_prompt_tokens, m.tip_prompt) for ep in episodes]
        gens = ctx.engine.generate(prompts, SamplingParams(max_new_tokens=m.tip_max_tokens, temperature=m.tip_temperature, stop=[]))
        return [clean_tip(g.text) for g in gens]

    def rollout_metrics(self) -> dict[str, float]:
        s = self.stats
        sizes = self.store.counts() if self.store is not None else {}
        self._warn_if_memory_cannot_help()
        return {
            "memory/entries": float(sum(sizes.values())),
            "memory/slots": float(len(sizes)),
            "memory/entries_written": s["entries_written"],
            "memory/tips": s["tips"],
            "memory/empty_tips": s["empty_tips"],
            "memory/tips_per_retrieval": s["retrieved"] / max(s["retrieval_calls"], 1),
            "memory/retrievals_without_slot": s["calls_without_slot"] / max(s["retrieval_calls"], 1),
            "time/retrieval_s": s["retrieval_s"],
            "time/memory_write_s": s["write_s"],
            "time/tip_generation_s": s["tip_generation_s"],
        }

    def _warn_if_memory_cannot_help(self) -> None:
        """Once per run: memory holds tips, yet none of this iteration's instances has any (slots are
        per instance), so every retrieval came back empty."""
        s = self.stats
        if self._warned or not self._slots or not s["retrieval_calls"] or s["calls_without_slot"] < s["retrieval_calls"]:
            return
        self._warned = True
        warnings.warn(
            f"memory: {len(self._slots)} instance(s) have tips, but none of this iteration's instances does; tips are "
            f"kept per instance, so memory helps only when instances repeat (memory/retrievals_without_slot = 1, "
            f"memory/tips_per_retrieval = 0). Draw from fewer instances (env.train_instances) or play more "
            f"iterations.", stacklevel=2)
