"""Rollout engine on Hugging Face `generate`, sharing the trainer's model object.

Why: it needs nothing beyond transformers, so it works everywhere (CPU tests, machines without
vLLM), and because it *is* the trainer's model there is no weight sync to get wrong. Prompts of a
batch are left-padded; the raw logits of each step are kept so the sampled tokens' log-probs can
be taken under exactly the distribution that was sampled (no top-k/top-p: the full softmax at the
given temperature).

Stops: an ASCII single-character stop string (the usual "\n") can never span two tokens, so it
becomes a set of extra end-of-sequence ids (every token whose text contains it), computed once;
transformers' general `stop_strings` check costs ~20% of a short CPU generation call and is kept
only for longer stop strings.

Compute dtype: generation runs under the same autocast as the trainer's forwards (bf16 under
`trainer.precision=bf16-mixed` or `sharding.mixed_precision=bf16`), so the sampling distribution is
the one the trainer scores (old log-probs are taken under that precision too) and, on CPUs with
bf16 instructions, generation takes 0.5-0.75x the time of float32 (BENCHMARKS.md).

Turns: consecutive calls of an episode share their prompt's prefix, so the engine keeps the last
call's key/value cache and encodes only what is new (`empo2.engines.prefix_cache`; `engine.prefix_cache`).
Rows of episodes that ended stay cached until the phase ends, so writing an episode's tip encodes
only its final observation and the request, not the episode again. What several prompts of a call
share (a group's identical first prompts, the instruction every instance's prompt opens with) is
encoded once and its cache rows forked.

Sharded policies (fsdp, fsdp2) cannot generate: each forward is a collective and the ranks' episodes
differ in length. There the engine keeps an unsharded replica and `sync_weights` copies the gathered
weights into it (only the adapters under LoRA; the frozen base is loaded once).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch

from empo2 import sharding
from empo2.engines.base import ENGINES, Generation, RolloutEngine, SamplingParams, trim_response
from empo2.engines.prefix_cache import (
    MIN_SHARED_TOKENS,
    PrefixCache,
    best_rows,
    carry_over,
    common_prefix_length,
    compact,
    plan_continuation,
    reusable,
    weights_version,
)
from empo2.engines.merged_lora import MergedLoRA, mergeable
from empo2.engines.roomy_cache import roomy_cache


_AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}


def compute_dtype(trainer_precision: object, sharding_mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype the trainer's forwards run under, or None (weights' own dtype): Lightning's
    `*-mixed` precisions, or FSDP's compute dtype under `sharding.mixed_precision`."""
    return _AUTOCAST.get(str(trainer_precision)) or sharding.COMPUTE_DTYPES.get(sharding_mixed_precision)


@ENGINES.register("hf")
class HFEngine(RolloutEngine):
    def __init__(self, model, tokenizer, max_batch_size: int = 64, source=None,
                 compute: torch.dtype | None = None, prefix_cache: bool = True, merge_lora: bool = False) -> None:
        self.model = model
        """The policy (or, sharded, its replica): the weights the engine serves and the trainer scores."""
        self._merged = MergedLoRA(model) if merge_lora and mergeable(model, compute) else None
        """A float32 LoRA policy's folded generation copy (`engine.merge_lora`); None: generate with `model`."""
        self._net: torch.nn.Module = model
        """The module serving the current `generate` call (`serving`, resolved once at its start)."""
        self._net_version = 0
        """`weights_version(self._net)` at the start of the current call: the version its caches carry."""
        self.prefix_cache = prefix_cache
        """Continue from the previous call's key/value cache where the prompts extend it."""
        self._cache: PrefixCache | None = None
        self._prompt_tokens = 0
        self._reused_tokens = 0
        self.compute = compute
        """Autocast dtype for generation (the trainer's), or None for the weights' own dtype."""
        self.source = source
        """The sharded policy whose gathered weights `model` (a replica) serves; None: `model` is the policy."""
        self.adapters_only = source is not None and any(not p.requires_grad for p in source.parameters())
        """LoRA: only the trainable weights change, so a sync copies only those."""
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self._stop_ids: dict[tuple[str, ...], set[int]] = {}

    @classmethod
    def from_config(cls, cfg, policy, tokenizer, work_dir):
        compute = compute_dtype(cfg.trainer.get("precision"), cfg.sharding.mixed_precision)
        kwargs = dict(max_batch_size=cfg.engine.max_batch_size, compute=compute, prefix_cache=cfg.engine.prefix_cache,
                      merge_lora=cfg.engine.merge_lora)
        if not sharding.is_sharded(policy):
            return cls(policy, tokenizer, **kwargs)
        from empo2.models import build_policy

        device = next(policy.parameters()).device
        replica = build_policy(cfg.model, cfg.seed).to(device)
        replica.requires_grad_(False)
        engine = cls(replica, tokenizer, source=policy, **kwargs)
        engine._copy_weights(trainable_only=False)
        return engine

    def _copy_weights(self, trainable_only: bool) -> None:
        weights = sharding.gathered_weights(self.source, trainable_only)
        result = self.model.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"replica does not fit the policy's weights: {result.unexpected_keys[:3]}")

    def sync_weights(self) -> None:
        if self.source is not None:
            self._copy_weights(trainable_only=self.adapters_only)

    def release_memory(self) -> None:
        self._cache = None

    def close(self) -> None:
        self._cache = None
        if self._merged is not None:
            self._merged.close()

    @property
    def serving(self) -> torch.nn.Module:
        """The module that generates: the folded copy, up to date with `model`, or `model` itself."""
        return self._merged.current() if self._merged is not None else self.model

    def metrics(self) -> dict[str, float]:
        """Share of prompt tokens taken from the cache since the last call (then reset)."""
        share = self._reused_tokens / self._prompt_tokens if self._prompt_tokens else 0.0
        self._prompt_tokens = self._reused_tokens = 0
        return {"engine/prompt_tokens_reused": share}

    def stop_token_ids(self, stop: list[str]) -> set[int] | None:
        """Token ids that end generation for these stops, or None when a stop can span tokens."""
        key = tuple(sorted(set(stop)))
        if not all(len(s) == 1 and s.isascii() for s in key):
            return None
        if key not in self._stop_ids:
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            self._stop_ids[key] = {i for i, t in enumerate(texts) if any(s in t for s in key)}
        return self._stop_ids[key]

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        self._net = self.serving  # weights do not move during a call: resolve the module and its version once
        self._net_version = weights_version(self._net)
        # One cache is kept, so only a call that fits one batch continues from (and leaves) one.
        reuse = self.prefix_cache and len(prompts) <= self.max_batch_size
        if not reuse:
            self._cache = None
        else:
            self._encode_shared(prompts)
        out: list[Generation] = []
        for start in range(0, len(prompts), self.max_batch_size):
            out.extend(self._generate_batch(prompts[start:start + self.max_batch_size], params, reuse))
        return out

    def _inputs(self, prompts: list[list[int]], reuse: bool, count: bool = True):
        """input_ids, attention mask, the cache to continue from (None: encode every token) and the
        cache rows it continues whole (which the call's own rows replace). `count`: into the
        reused-token metric (a call's prompts are; the shared encoding before it is not)."""
        self._prompt_tokens += sum(len(p) for p in prompts) if count else 0
        if reuse and self._cache is not None and self._cache.version == self._net_version:
            cont = plan_continuation(self._cache, prompts, self.pad_id)
            if cont is not None:
                self._reused_tokens += cont.reused if count else 0
                return cont.input_ids, cont.attention_mask, cont.kv, cont.extended
        self._cache = None  # stale (the weights moved) or of no use
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention[i, width - len(p):] = 1
        return input_ids, attention, None, []

    def _keep_cache(self, result, attention: torch.Tensor, responses: list[list[int]]) -> PrefixCache | None:
        """The finished call's cache, cut to each row's prompt and kept response tokens."""
        kv = getattr(result, "past_key_values", None)
        if not reusable(kv):
            return None
        width = attention.shape[1]
        cached = kv.get_seq_length()
        if cached != result.sequences.shape[1] - 1:  # the last sampled token is never fed
            return None
        keep = torch.zeros((len(responses), cached), dtype=torch.bool)
        keep[:, :width] = attention.bool()
        for i, ids in enumerate(responses):
            keep[i, width:width + min(len(ids), cached - width)] = True
        return compact(kv, result.sequences[:, :cached].cpu(), keep, self._net_version)

    @contextlib.contextmanager
    def _generating(self):
        """Eval mode and the trainer's autocast around a call's forwards; yields the model's device."""
        model = self._net
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        autocast = (torch.autocast(device.type, dtype=self.compute) if self.compute is not None
                    else contextlib.nullcontext())
        try:
            with autocast:
                yield device
        finally:
            model.train(was_training)

    def _cached_reach(self, prompts: list[list[int]]) -> list[int]:
        """Per prompt, how many of its leading tokens the cache holds (0 without a valid cache)."""
        if self._cache is not None and self._cache.version != self._net_version:
            self._cache = None
        if self._cache is None:
            return [0] * len(prompts)
        return best_rows(self._cache, prompts)[1]

    def _encode_shared(self, prompts: list[list[int]]) -> None:
        """Encode once, into the cache, what several prompts of a call share beyond what the cache
        holds: the opening common to the distinct prompts, then each prompt that occurs more than
        once (all but its last token). The call then continues every prompt from those rows."""
        counts = Counter(tuple(p) for p in prompts)
        distinct = [list(p) for p in counts]
        reach = self._cached_reach(distinct)
        if len(distinct) > 1:
            opening = common_prefix_length(distinct)
            if opening - max(reach) >= MIN_SHARED_TOKENS:
                self._extend_cache([distinct[0][:opening]])
        repeated = [p for p, n in counts.items() if n > 1]
        if repeated:
            reach = self._cached_reach([list(p) for p in repeated])
            todo = [list(p[:-1]) for p, r in zip(repeated, reach) if len(p) - 1 - r >= MIN_SHARED_TOKENS]
            if todo:
                self._extend_cache(todo)
        # A call encodes its prompts' new tails in one forward, padded to the longest: tails far
        # longer than the rest (an episode the cache does not hold, among ones it does) go first.
        tails = [len(p) - r for p, r in zip(distinct, self._cached_reach(distinct))]
        cut = max(2 * sorted(tails)[len(tails) // 2], 4 * MIN_SHARED_TOKENS)
        long = [p[:-1] for p, t in zip(distinct, tails) if t > cut]
        if long and len(long) < len(distinct):
            self._extend_cache(long)

    def _extend_cache(self, seqs: list[list[int]]) -> None:
        """Encode `seqs` into cache rows (continuing from the cache where it holds their openings);
        nothing is sampled."""
        sentinel = [s + [self.pad_id] for s in seqs]  # `_inputs` always leaves a prompt's last token to the call
        input_ids, attention, past, extended = self._inputs(sentinel, reuse=True, count=False)
        input_ids, attention = input_ids[:, :-1], attention[:, :-1]
        cached = past.get_seq_length() if past is not None else 0
        if input_ids.shape[1] <= cached:
            return
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)  # as generate derives them: padding does not count
        with self._generating() as device:
            out = self._net(input_ids=input_ids[:, cached:].to(device), attention_mask=attention.to(device),
                               position_ids=positions[:, cached:].to(device), past_key_values=past,
                               use_cache=True, logits_to_keep=1)
        new = compact(out.past_key_values, input_ids, attention.bool(), self._net_version)
        self._cache = carry_over(self._cache, extended, new, self.max_batch_size)

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, reuse: bool = False) -> list[Generation]:
        input_ids, attention, past, extended = self._inputs(prompts, reuse)
        width = input_ids.shape[1]
        greedy = params.temperature <= 0
        stop_ids = self.stop_token_ids(list(params.stop)) if params.stop else set()
        with self._generating() as device:
            result = self._net.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=params.max_new_tokens,
                do_sample=not greedy,
                temperature=None if greedy else params.temperature,
                top_k=None,
                top_p=None,
                stop_strings=list(params.stop) if stop_ids is None else None,
                tokenizer=self.tokenizer,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos_ids | (stop_ids or set())),
                output_logits=True,
                return_dict_in_generate=True,
                past_key_values=past if past is not None else roomy_cache(),
                use_cache=True,
            )
        new_tokens = result.sequences[:, width:].cpu()
        temp = 1.0 if greedy else params.temperature
        step_logps = []
        for t, logits in enumerate(result.logits):
            logp = torch.log_softmax(logits.float() / temp, dim=-1)
            step_logps.append(logp.gather(1, new_tokens[:, t:t + 1].to(logp.device)).squeeze(1).cpu())
        logps = torch.stack(step_logps, dim=1) if step_logps else torch.zeros((len(prompts), 0))
        gens = []
        for i in range(len(prompts)):
            ids, reason = trim_response(new_tokens[i].tolist(), self.tokenizer, params.stop, self.eos_ids)
            gens.append(Generation(
                token_ids=ids,
                logprobs=logps[i, : len(ids)].tolist(),
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason=reason,
            ))
        if reuse:
            kept = self._keep_cache(result, attention, [g.token_ids for g in gens])
            self._cache = carry_over(self._cache, extended, kept, self.max_batch_size)
        return gens
