"""The policy and its update: a LightningModule with manual optimisation.

Why manual optimisation: one optimizer step consumes a PPO mini-batch of segments (an episode's
chained steps scored as one sequence, `empo2.training_rows`) that is split into micro-batches of
similar length; the token-mean loss must divide by the *mini-batch's* token
count, and the gradient norm (before clipping) is a metric users watch. Lightning's automatic loop
would hide both. Old log-probs are recomputed by the trainer before the first update of an
iteration (called by the datamodule once the rollout is built), so the ratio compares the trainer
with itself, never with the rollout engine; the engine's numbers only feed the mismatch metric.

Why the old log-probs are taken on the update's own micro-batches (`segment_logprobs`): a row's
log-probs depend, in the last bits, on what it is batched with (its padding, the matmul's row
count), and which way they round depends on the CPU's kernels (measured: bf16 emulated on an
AVX2-only CPU moved the first PPO ratio of an iteration to 0.99997). Forwarding the first PPO
epoch's micro-batches exactly as the update will (same rows, same order, same tensors) makes the
first ratio 1 on every CPU, not on the ones whose kernels happen to be batch-invariant.

Checkpoints: with LoRA only the trainable (adapter) weights go into the checkpoint; the frozen base
comes from `model.name_or_path` again on resume.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any, Sequence

import lightning as L
import torch

from empo2 import distributed as D
from empo2.checkpoint import check_fits_lora, read_checkpoint
from empo2.config import Config
from empo2.loss import KL_ESTIMATORS, LOSSES, token_mean_scale
from empo2.models import build_policy, load_tokenizer
from empo2 import sharding
from empo2.peak_memory import PeakMemory, out_of_memory_hint
from empo2.token_batch import build_batch, build_span_batch, micro_batches, response_logprobs
from empo2.training_rows import Segment, chain_groups
from empo2.update_stats import UpdateStats


class EMPO2Module(L.LightningModule):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        self.strict_loading = not cfg.model.lora.enabled
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.policy: torch.nn.Module | None = None
        self.loss_fn = LOSSES.get(cfg.algo.loss)
        self.kl_fn = KL_ESTIMATORS.get(cfg.algo.kl_estimator)
        self._frozen: dict[str, torch.nn.Module] = {}
        """The reference policy of full fine-tuning (kept out of the state dict and checkpoints)."""
        self._stats = UpdateStats()
        self.peak = PeakMemory()
        self.token_layout = "padded"
        """The micro-batch layout in use (`optim.token_layout`, resolved when the model is built)."""

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        """Build the policy and wrap it for the trainer's strategy (FSDP units under fsdp/fsdp2)."""
        if self.policy is not None:
            return
        policy = build_policy(self.cfg.model, self.cfg.seed)
        strategy = self._trainer.strategy if self._trainer is not None else None
        self.token_layout = resolve_token_layout(self.cfg.optim.token_layout, policy)
        self.policy = sharding.shard_policy(policy, strategy, self.cfg)
        if self.cfg.algo.kl_coef > 0 and not self.cfg.model.lora.enabled and self._trainer is not None:
            # Full fine-tuning: a frozen copy of the initial weights (sharded like the policy), built
            # for training only (inference from a checkpoint needs no reference). With LoRA the
            # reference is the policy itself with its adapters switched off.
            reference = build_policy(self.cfg.model, self.cfg.seed).requires_grad_(False).eval()
            self._frozen["reference"] = sharding.shard_policy(reference, strategy, self.cfg)

    def reference_model(self) -> tuple[torch.nn.Module, Any]:
        """(model, context manager) that compute log π_ref: the base model for the KL penalty."""
        assert self.policy is not None
        if self.cfg.model.lora.enabled:
            return self.policy, sharding.unwrapped(self.policy).disable_adapter
        reference = self._frozen.get("reference")
        if reference is None:
            raise RuntimeError("algo.kl_coef > 0 needs the reference policy (configure_model builds it)")
        if not sharding.is_sharded(reference):
            reference.to(self.device)
        return reference, nullcontext

    @classmethod
    def from_checkpoint(cls, cfg: Config, path: str | None) -> "EMPO2Module":
        """The policy with a checkpoint's weights (the base model's when `path` is None), for
        inference. A LoRA checkpoint holds the adapters only: every one of them must be there."""
        ckpt = read_checkpoint(path) if path is not None else None  # a bad file fails before the model loads
        if ckpt is not None and "state_dict" not in ckpt:
            raise ValueError(f"ckpt_path: {path} holds no state_dict (not a Lightning checkpoint)")
        if ckpt is not None:  # before the model loads
            check_fits_lora(ckpt["state_dict"], cfg.model.lora.enabled, cfg.model.lora.r, path)
        module = cls(cfg)
        module.configure_model()
        if ckpt is not None:
            try:
                result = module.load_state_dict(ckpt["state_dict"], strict=False)
            except RuntimeError as err:  # shapes differ (another LoRA rank, another model)
                raise ValueError(f"ckpt_path: {path} does not fit model.* of this config: {str(err)[:300]}") from None
            wanted = {n for n, p in module.named_parameters() if p.requires_grad} if cfg.model.lora.enabled \
                else set(module.state_dict())
            missing = sorted(set(result.missing_keys) & wanted)
            if result.unexpected_keys or missing:
                raise ValueError(
                    f"ckpt_path: {path} does not fit model.* of this config "
                    f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
                )
        module.policy.eval()
        return module

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        assert self.policy is not None
        return [p for p in self.policy.parameters() if p.requires_grad]

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(
            self.trainable_parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas)
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.cfg.model.lora.enabled:
            keep = {sharding.clean_parameter_name(n) for n, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    # ------------------------------------------------------------------ log-probs
    @torch.no_grad()
    def compute_logprobs(
        self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], temperature: float = 1.0,
        reference: bool = False,
    ) -> list[list[float]]:
        """Per-token log-probs of each response under the current weights (eval mode), or under the
        reference policy (`reference=True`, for the KL penalty). With `optim.sequences: shared`,
        consecutive pairs whose prompts chain (an episode's steps, given in order) are scored as one
        sequence."""
        assert self.policy is not None
        model, context = self.reference_model() if reference else (self.policy, nullcontext)
        was_training = self.policy.training
        self.policy.eval()
        out: list[list[float]] = [[] for _ in prompts]
        # The same precision context as the training forward (autocast under *-mixed), so the
        # first PPO ratio of an iteration is exactly 1.
        trainer = self._trainer
        precision = trainer.precision_plugin.forward_context if trainer is not None else nullcontext
        groups = chain_groups(prompts, responses) if self.shared_sequences else [[i] for i in range(len(prompts))]
        chunks = self._micro_batches([len(prompts[g[-1]]) for g in groups], [len(responses[g[-1]]) for g in groups],
                                     multi_span=any(len(g) > 1 for g in groups))
        try:
            with out_of_memory_hint(self.cfg.micro_batch_tokens):
                self._score_chunks(model, context, precision, chunks, groups, prompts, responses, temperature, out)
        finally:
            self.policy.train(was_training)
        return out

    @property
    def shared_sequences(self) -> bool:
        return self.cfg.optim.sequences == "shared"

    def _score_chunks(self, model, context, precision, chunks: list[list[int]], groups: list[list[int]],
                      prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], temperature: float,
                      out: list[list[float]]) -> None:
        """Forward every micro-batch of pair groups (and the empty ones that keep sharded ranks in
        step) into `out`."""
        for k in range(sharding.lockstep_count(len(chunks), self.policy)):
            mine = [groups[j] for j in chunks[k]] if k < len(chunks) else []
            pairs = [i for g in mine for i in g]
            batch = build_span_batch(
                self.token_layout, [list(prompts[g[-1]]) + list(responses[g[-1]]) for g in mine],
                [[(len(prompts[i]), len(responses[i])) for i in g] for g in mine], self.pad_id,
            ) if mine else self._empty_batch()
            with precision(), context():
                logp = response_logprobs(model, batch.to(self.device), temperature).float().cpu()
            for row, i in enumerate(pairs):
                out[i] = logp[row, : len(responses[i])].tolist()

    def _empty_batch(self):
        """A one-token batch for the forwards a sharded rank runs only to keep in step with others."""
        return build_batch(self.token_layout, [[self.pad_id]], [[self.pad_id]], self.pad_id)

    @torch.no_grad()
    def segment_logprobs(self, mini_batches: Sequence[Sequence[Segment]], temperature: float = 1.0,
                         reference: bool = False) -> dict[int, list[list[float]]]:
        """Per-token log-probs of every row of every segment on its train prompt, forwarded in
        exactly the micro-batches `training_step` will forward each mini-batch in (the same plan
        and the same tensors), so the first PPO ratio of an iteration is 1 whatever the CPU's
        kernels. Keyed by `id(segment)`: one list per row. `reference=True` scores under the
        reference policy (the KL penalty then starts at exactly 0)."""
        assert self.policy is not None
        model, context = self.reference_model() if reference else (self.policy, nullcontext)
        trainer = self._trainer
        precision = trainer.precision_plugin.forward_context if trainer is not None else nullcontext
        was_training = self.policy.training
        self.policy.eval()
        out: dict[int, list[list[float]]] = {}
        try:
            with out_of_memory_hint(self.cfg.micro_batch_tokens):
                for segs in mini_batches:
                    segs = list(segs)
                    chunks = self.micro_batch_plan(segs)
                    for k in range(sharding.lockstep_count(len(chunks), self.policy)):
                        mine = [segs[i] for i in chunks[k]] if k < len(chunks) else []
                        batch = self.segment_batch(mine) if mine else self._empty_batch()
                        with precision(), context():
                            logp = response_logprobs(model, batch.to(self.device), temperature).float().cpu()
                        row = 0
                        for seg in mine:
                            out[id(seg)] = [logp[row + j, : len(r.response_ids)].tolist() for j, r in enumerate(seg.rows)]
                            row += len(seg.rows)
        finally:
            self.policy.train(was_training)
        return out

    def micro_batch_plan(self, segments: Sequence[Segment]) -> list[list[int]]:
        """How a mini-batch of segments is cut into micro-batches (indices into `segments`): the one
        plan both the update and `segment_logprobs` use."""
        return self._micro_batches([len(seg.rows[-1].train_prompt) for seg in segments],
                                   [len(seg.rows[-1].response_ids) for seg in segments],
                                   multi_span=any(len(seg.rows) > 1 for seg in segments))

    def segment_batch(self, segments: Sequence[Segment]):
        """The tensors of one micro-batch of segments (one row per response span)."""
        return build_span_batch(self.token_layout, [seg.sequence for seg in segments],
                                [seg.spans for seg in segments], self.pad_id)

    def _micro_batches(self, prompt_lengths: Sequence[int], response_lengths: Sequence[int],
                       multi_span: bool = False) -> list[list[int]]:
        """Sequences (the last step's prompt and response of each) cut by `optim.micro_batch_size`
        sequences and `optim.max_tokens_per_micro_batch` tokens; sequences with several spans are
        packed (`build_span_batch`), so they are counted as the packed layout sees them."""
        return micro_batches(prompt_lengths, response_lengths, self.cfg.optim.micro_batch_size,
                             self.cfg.micro_batch_tokens, "packed" if multi_span else self.token_layout)

    # ------------------------------------------------------------------ update
    def on_train_start(self) -> None:
        """The optimizer settings of the config, also on resume: Lightning restores the optimizer's
        state with the lr, weight decay and betas it was saved with (`empo2.resume_changes`)."""
        if self.trainer.ckpt_path is None:  # a fresh run's optimizer was built from the config
            return
        o = self.cfg.optim
        wanted = {"lr": o.lr, "weight_decay": o.weight_decay, "betas": tuple(o.betas)}
        for group in self.optimizers().optimizer.param_groups:
            group.update({k: v for k, v in wanted.items() if k in group})

    def on_train_epoch_start(self) -> None:
        self._stats = UpdateStats()
        self.peak.reset()  # the data phase (rollout, tips, old log-probs) has ended: the update's own peak

    def training_step(self, segments: list[Segment], batch_idx: int) -> None:
        assert self.policy is not None
        self._disable_ddp_gradient_hooks()
        opt = self.optimizers()
        t0 = time.perf_counter()
        # Token-mean over the tokens that count (response tokens not removed by low-prob masking),
        # counted over all ranks: the update equals one over the union of the ranks' rows.
        counted = torch.tensor([float(sum(seg.counted_tokens for seg in segments))], device=self.device)
        D.all_reduce_sum_([counted])
        total_tokens = float(counted)
        if total_tokens == 0:  # nothing to learn from anywhere: no step (weight decay included)
            return
        # FSDP averages gradients over ranks; the loss is a mean over all ranks already.
        scale = token_mean_scale(total_tokens, sharding.grad_average_factor(self.policy))
        chunks = self.micro_batch_plan(segments)
        with out_of_memory_hint(self.cfg.micro_batch_tokens):
            loss_value = self._accumulate_gradients(segments, chunks, scale, total_tokens)
        self._sum_gradients_over_ranks()
        grad_norm = self._clip_and_norm()
        opt.step()
        opt.zero_grad(set_to_none=True)
        s = self._stats
        s.loss_sum += loss_value
        s.grad_norm_sum += grad_norm
        s.steps += 1
        s.response_tokens += sum(len(r.response_ids) for seg in segments for r in seg.rows)
        s.counted_tokens += total_tokens
        s.update_s += time.perf_counter() - t0

    def _accumulate_gradients(self, segments: list[Segment], chunks: list[list[int]], scale: float,
                              total_tokens: float) -> float:
        """Forward/backward of every micro-batch (and the empty ones a sharded rank runs to keep in
        step); returns this rank's share of the token-mean loss."""
        a = self.cfg.algo
        s = self._stats
        loss_value = 0.0
        for k in range(sharding.lockstep_count(len(chunks), self.policy)):
            if k >= len(chunks):  # a sharded rank with fewer micro-batches still joins the collectives
                logp = response_logprobs(self.policy, self._empty_batch().to(self.device), self.cfg.rollout.temperature)
                self.manual_backward(logp.sum() * 0.0)
                continue
            segs = [segments[i] for i in chunks[k]]
            mb = [r for seg in segs for r in seg.rows]
            batch = self.segment_batch(segs).to(self.device)
            logp = response_logprobs(self.policy, batch, self.cfg.rollout.temperature)
            width = logp.shape[1]
            old = torch.tensor([_pad(r.old_logprobs, width) for r in mb], device=self.device)
            keep = torch.tensor([_pad(r.keep, width) for r in mb], device=self.device)
            adv = torch.tensor([[r.advantage] for r in mb], device=self.device, dtype=logp.dtype)
            mask = batch.response_mask * keep
            terms = self.loss_fn(
                logp, old, adv, mask, clip_low=a.clip_low, clip_high=a.clip_high,
                dual_clip=a.dual_clip, log_ratio_clamp=a.log_ratio_clamp,
            )
            s.masked_tokens += float(batch.response_mask.sum() - mask.sum())
            loss_sum = terms.loss_sum
            if a.kl_coef > 0:  # KL to the reference, token-mean over the same tokens as the policy loss
                ref = torch.tensor([_pad(r.ref_logprobs, width) for r in mb], device=self.device)
                kl_sum = (self.kl_fn(logp, ref) * mask).sum()
                loss_sum = loss_sum + a.kl_coef * kl_sum
                s.kl_sum += float(kl_sum.detach())
                s.kl_tokens += float(mask.sum())
            self.manual_backward(loss_sum * scale)
            loss_value += float(loss_sum.detach()) / max(total_tokens, 1)
            s.clipped += float(terms.clipped)
            s.dual_clipped += float(terms.dual_clipped)
            s.ratio_sum += float(terms.ratio_sum)
            s.ratio_max = max(s.ratio_max, float(terms.ratio_max))
            s.real_tokens += batch.real_tokens
            s.padded_tokens += batch.padded_tokens
        return loss_value

    def _disable_ddp_gradient_hooks(self) -> None:
        """Gradients are summed over ranks by `_sum_gradients_over_ranks`, once per optimizer step
        after all micro-batches. DDP's reducer would all-reduce at every `manual_backward` instead,
        which deadlocks when ranks have different micro-batch counts. Lightning re-arms it after
        every step (its forward redirection sets `require_backward_grad_sync` back to True), so
        this runs at the start of every training step."""
        ddp = getattr(self.trainer.strategy, "model", None)
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            ddp.require_backward_grad_sync = False

    def _sum_gradients_over_ranks(self) -> None:
        if not D.active() or sharding.is_sharded(self.policy):  # FSDP reduces (sums) shards itself
            return
        params = self.trainable_parameters()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        D.all_reduce_sum_([p.grad for p in params])

    def _rank_weight_gap(self) -> float:
        """Largest difference between ranks of a few fingerprints of the trainable weights."""
        flat = torch.cat([p.detach().flatten().double() for p in self.trainable_parameters()]).cpu()
        ramp = torch.linspace(0.5, 1.5, flat.numel(), dtype=torch.float64)
        prints = D.gather_objects([float(flat.sum()), float((flat * flat).sum()), float((flat * ramp).sum())])
        return max(abs(a - b) for other in prints for a, b in zip(prints[0], other))

    def _clip_and_norm(self) -> float:
        params = [p for p in self.trainable_parameters() if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        return sharding.clip_grad_norm(self.policy, params, max_norm)

    def update_metrics(self) -> dict[str, float]:
        """The iteration's update statistics over all ranks (called by every rank at the end of the epoch)."""
        return UpdateStats.combine(D.gather_objects(self._stats)).metrics()

    def on_train_epoch_end(self) -> None:
        metrics = {"iteration": float(self.current_epoch)}
        dm = getattr(self.trainer, "datamodule", None)
        metrics.update(getattr(dm, "iteration_metrics", {}))
        metrics.update(self.update_metrics())
        metrics.update(self.peak.metrics("update"))
        phases = [v for k, v in metrics.items() if k.startswith("memory/") and k.endswith("_peak_rss_mb")]
        metrics["memory/peak_rss_mb"] = max(phases)
        if D.active() and not sharding.is_sharded(self.policy):  # replicas must agree; shards differ
            gap = self._rank_weight_gap()
            if gap != 0.0:
                raise RuntimeError(f"ranks hold different weights after iteration {self.current_epoch} (gap {gap})")
            metrics["train/rank_weight_gap"] = gap
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=self.trainer.world_size > 1)


def resolve_token_layout(choice: str, policy: torch.nn.Module) -> str:
    """`optim.token_layout`: auto means packed under flash attention (variable-length kernels, no
    padding) and padded elsewhere (as fast on CPU, where sdpa keeps memory linear under a mask)."""
    if choice != "auto":
        return choice
    config = getattr(policy, "config", None)
    implementation = str(getattr(config, "_attn_implementation", "") or "")
    return "packed" if implementation.startswith("flash") else "padded"


def _pad(values: Sequence[float], width: int) -> list[float]:
    return list(values[:width]) + [0.0] * (width - len(values))
