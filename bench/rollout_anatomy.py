"""Where the rollout phase of one protocol iteration spends its time: prompt encoding, decode steps,
the environment, tip writing, and the rest.

One iteration's rollouts (the config's B instances × N episodes, its turns, budgets and precision)
played by the HF engine on the config's policy, then the tip writing of those episodes, as the
trainer runs them. The environments are started first and not timed (a run starts its JVMs once,
not every iteration); environment time is then resets and steps. A hook times every forward of the model: a forward that brings several new tokens
per row is prompt encoding, one that brings one token per row is a decode step. Per phase: tokens
encoded (real, and as computed with padding) and their seconds; decode steps, rows per step and
their seconds; environment seconds; everything else (sampling, stop checks, Python, cache handling)
as overhead. Two floors measured in the same process: a plain fp32 matmul (2048²), and plain
forwards of the same model — one encoding forward (32 rows × 256 tokens) and one decode step at the
phase's mean rows and cache length — so achieved FLOP/s (2 × weights × tokens, plus the output
layer for one position a row) read against what this machine and model can do.

    python bench/rollout_anatomy.py --config conf/protocol/keyroom-success.yaml [--init-from DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from callbacks.tip_memory import tip_prompt
from empo2.config import load_config
from empo2.engines import SamplingParams, build_engine
from empo2.envs import EnvPool
from empo2.episode import Episode
from empo2.module import EMPO2Module
from empo2.rollout import run_episodes
from shared_sequences import matmul_flops  # bench/ is on the path when a bench script runs


@dataclass
class Forwards:
    """Every timed forward of a phase: (rows, new tokens per row, real new tokens, cache length, seconds)."""

    calls: list[tuple[int, int, int, int, float]] = field(default_factory=list)

    def encoding(self):
        return [c for c in self.calls if c[1] > 1]

    def decoding(self):
        return [c for c in self.calls if c[1] == 1]


class ForwardClock:
    """Times each forward of `model` (the causal LM generate calls) into the current `Forwards`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.current: Forwards | None = None
        self._t0 = 0.0
        self._shape: tuple[int, int, int, int] = (0, 0, 0, 0)
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        past = kwargs.get("past_key_values")
        rows, new = ids.shape
        real = int(mask[:, -new:].sum()) if mask is not None else rows * new
        cached = past.get_seq_length() if past is not None and hasattr(past, "get_seq_length") else 0
        self._shape = (rows, new, real, int(cached))
        self._t0 = time.perf_counter()

    def _after(self, module, args, kwargs, output):
        if self.current is not None:
            self.current.calls.append((*self._shape, time.perf_counter() - self._t0))


def causal_lm(policy: torch.nn.Module) -> torch.nn.Module:
    """The transformers model whose forward `generate` calls (under a PEFT wrapper, its base)."""
    return policy.get_base_model() if hasattr(policy, "get_base_model") else policy


def flops_per_token(model: torch.nn.Module) -> tuple[float, float]:
    """(2 × non-embedding weights, 2 × the output layer's weights): a token's forward FLOPs, and
    the output layer's, paid once per row (generate projects only the last position)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embed.numel() - (0 if head is embed else head.numel())
    return 2.0 * body, 2.0 * head.numel()


@torch.no_grad()
def plain_encoding_flops(model, autocast, rows: int = 32, tokens: int = 256) -> float:
    body, head = flops_per_token(model)
    ids = torch.randint(10, 1000, (rows, tokens))
    with autocast():
        model(input_ids=ids, logits_to_keep=1, use_cache=False)
        t0 = time.perf_counter()
        model(input_ids=ids, logits_to_keep=1, use_cache=False)
        seconds = time.perf_counter() - t0
    return (body * rows * tokens + head * rows) / seconds


@torch.no_grad()
def plain_decode_step(model, autocast, rows: int, cached: int, steps: int = 4) -> float:
    """Seconds of one decode step (rows × one token) on a cache of `cached` tokens."""
    ids = torch.randint(10, 1000, (rows, max(cached, 1)))
    with autocast():
        past = model(input_ids=ids, use_cache=True).past_key_values
        nxt = torch.randint(10, 1000, (rows, 1))
        model(input_ids=nxt, past_key_values=past, use_cache=True)
        t0 = time.perf_counter()
        for _ in range(steps):
            past = model(input_ids=nxt, past_key_values=past, use_cache=True).past_key_values
        return (time.perf_counter() - t0) / steps


def report(name: str, fw: Forwards, wall: float, env_s: float, model, autocast, matmul: float, plain: float) -> list[str]:
    body, head = flops_per_token(model)
    enc, dec = fw.encoding(), fw.decoding()
    enc_s, dec_s = sum(c[4] for c in enc), sum(c[4] for c in dec)
    computed = sum(c[0] * c[1] for c in enc)
    real = sum(c[2] for c in enc)
    enc_flops = (body * computed + head * sum(c[0] for c in enc)) / enc_s if enc_s else 0.0
    rows = float(np.mean([c[0] for c in dec])) if dec else 0.0
    cache = float(np.mean([c[3] for c in dec])) if dec else 0.0
    floor = plain_decode_step(model, autocast, max(int(round(rows)), 1), int(round(cache))) if dec else 0.0
    step = dec_s / len(dec) if dec else 0.0
    other = wall - enc_s - dec_s - env_s
    return [
        f"| {name} | {wall:.1f} | {real:,} / {computed:,} ({1 - real / computed:.0%} padding) | {enc_s:.1f} s = {enc_s / wall:.0%} | "
        f"{enc_flops / 1e9:.1f} G = {enc_flops / matmul:.2f} of matmul, **{enc_flops / plain:.2f}** of a plain forward | "
        f"{len(dec)} steps × {rows:.1f} rows (cache {cache:.0f}) | {dec_s:.1f} s = {dec_s / wall:.0%} | "
        f"{step * 1e3:.0f} ms vs plain {floor * 1e3:.0f} ms = **{step / floor if floor else 0:.2f}×** | "
        f"{env_s:.1f} s = {env_s / wall:.0%} | {other:.1f} s = {other / wall:.0%} |"
    ]


def digest(steps, tips) -> str:
    """A fingerprint of every sampled token and its log-prob (rounded to 1e-6), rollout then tips."""
    import hashlib

    h = hashlib.sha256()
    for ids, logps in [(s.response_ids, s.engine_logprobs) for s in steps] + [(g.token_ids, g.logprobs) for g in tips]:
        h.update(repr((list(ids), [round(x, 6) for x in logps])).encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--init-from", help="a warm-start policy folder (model.init_from)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    over = list(args.overrides) + ([f"model.init_from={args.init_from}"] if args.init_from else [])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"out_dir={tmp}", "name=anatomy", f"seed={args.seed}", "engine.kind=hf", *over])
        module = EMPO2Module.from_checkpoint(cfg, None)
        engine = build_engine(cfg, module.policy, module.tokenizer, cfg.run_dir / "engine")
        model = causal_lm(engine.serving)  # the module that generates (a folded copy under engine.merge_lora)
        clock = ForwardClock(model)
        compute = engine.compute
        autocast = (lambda: torch.autocast("cpu", dtype=compute)) if compute is not None else torch.no_grad
        r = cfg.rollout
        with EnvPool.from_config(cfg.env) as pool:
            n = r.tasks_per_iteration * r.group_size
            envs = pool.take(n)
            train = list(cfg.env.train_instances or envs[0].instances("train"))
            t_start = time.perf_counter()
            for env in envs:  # a run starts its environments (JVMs) once, not every iteration: not timed below
                env.reset(train[0])
            start_s = time.perf_counter() - t_start
            picks = np.random.default_rng(args.seed).choice(len(train), size=r.tasks_per_iteration, replace=False)
            episodes = [Episode(uid=f"0-0-{b * r.group_size + k}", instance=train[i], group=f"0-0-{b}")
                        for b, i in enumerate(picks) for k in range(r.group_size)]
            layout = replace(r.prompt_layout, tips_scope=cfg.memory.tips_in_history)
            params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, stop=list(r.stop))
            torch.manual_seed(args.seed)
            clock.current = rollout = Forwards()
            t0 = time.perf_counter()
            stats = run_episodes(envs, episodes, engine, module.tokenizer, params, r.max_prompt_tokens,
                                 max_turns=cfg.env.max_turns, layout=layout, env_threads=r.env_thread_count)
            rollout_wall = time.perf_counter() - t0
        played = [ep for ep in episodes if ep.steps]
        m = cfg.memory
        prompts = [tip_prompt(ep, module.tokenizer, cfg.tip_prompt_tokens, m.tip_prompt) for ep in played]
        clock.current = tips = Forwards()
        t1 = time.perf_counter()
        written = engine.generate(prompts, SamplingParams(max_new_tokens=m.tip_max_tokens, temperature=m.tip_temperature, stop=[]))
        tips_wall = time.perf_counter() - t1
        clock.current = None
        transcripts = sum(p[:len(ep.steps[-1].prompt_ids)] != ep.steps[-1].prompt_ids for ep, p in zip(played, prompts))
        matmul = matmul_flops()
        plain = plain_encoding_flops(model, autocast)
        print(f"environments started (once a run, not counted below) in {start_s:.1f} s")
        print(f"config {args.config}; {len(episodes)} episodes, {stats.turns} turns, {stats.generated_tokens} generated "
              f"tokens; precision {cfg.trainer.get('precision', '32-true')}; threads {torch.get_num_threads()}; "
              f"plain matmul {matmul / 1e9:.1f} GFLOP/s, plain forward {plain / 1e9:.1f} GFLOP/s; "
              f"{transcripts} of {len(prompts)} tip prompts in the transcript form (memory.tip_prompt={m.tip_prompt}); "
              f"LoRA {'folded into a generation copy' if engine.serving is not module.policy else 'unmerged'}")
        print(f"sampled: {digest([s for ep in played for s in ep.steps], written)} (two runs that print the same "
              f"digest sampled the same tokens with the same log-probs)")
        print("| phase | wall s | tokens encoded (real / computed) | encoding | encoding FLOP/s | decode steps | "
              "decoding | decode step vs floor | environment | other |")
        print("|---|---:|---|---|---|---|---|---|---|---|")
        for line in (report("rollout", rollout, rollout_wall, stats.env_s, model, autocast, matmul, plain)
                     + report("tip writing", tips, tips_wall, 0.0, model, autocast, matmul, plain)):
            print(line)


if __name__ == "__main__":
    main()
