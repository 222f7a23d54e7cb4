"""Typed configuration schema: YAML + CLI overrides validated before anything heavy loads.

Why this shape: every field is a dataclass attribute with a docstring right under it (as in
litgpt), so the schema *is* the documentation (`empo2.config_reference` generates
docs/CONFIG.md from it), and a field's allowed values are declared on the field itself (`choice(...)`,
`positive(...)`). OmegaConf merges YAML and `key=value` overrides onto the structured schema, which
rejects unknown keys and wrong types with the dotted key path; `check_fields` then applies the
declared choices and ranges and `empo2.config_checks` the rules across fields, every error naming
the key. `trainer` is a free mapping passed straight to `lightning.Trainer`, checked against that
constructor's signature, so every Trainer option works without being mirrored here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from empo2.config_checks import check_values
from empo2.config_commands import AdaptConfig, CompareConfig, EvalConfig, ExportConfig, SFTConfig
from empo2.config_error import ConfigError
from empo2.config_hints import check_section_override, did_you_mean, yaml_error_text
from empo2.config_fields import (check_fields, choice, cosine, count_or_none, discount, non_negative, positive,
                                 probability)
from empo2.conversation import PromptLayout

__all__ = ["Config", "ConfigError", "check_fields", "load_config", "to_dict", "to_yaml", "validate"]


@dataclass
class LoraConfig:
    enabled: bool = True
    """Train LoRA adapters through peft; false trains all weights (full fine-tuning)."""
    r: int = positive(16)
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = non_negative(0.0)
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters."""


@dataclass
class ModelConfig:
    name_or_path: str = "embedded:smollm2-135m-instruct"
    """`embedded:<name>` (prepared by `python -m empo2.models prepare`), a local folder, or a hub id
    already in the local Hugging Face cache. Nothing at run time contacts a hub."""
    dtype: str = choice("float32", "bfloat16", "float16")
    """Weight dtype: float32, bfloat16 or float16. Mixed precision is `trainer.precision` (ddp, auto)
    or `sharding.mixed_precision` (fsdp, fsdp2)."""
    gradient_checkpointing: bool = False
    """Keep only each decoder layer's input and recompute the layer in the backward pass. The CPU
    configs turn it on with bf16 compute: the update then needs about a fifth of float32's memory and
    is still faster than float32 without it (BENCHMARKS.md)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter settings."""
    init_from: Optional[str] = None
    """Start from these weights instead of `name_or_path`'s: the `policy/` folder that
    `python -m empo2.sft` writes (or any model folder of the same architecture). The tokenizer
    still comes from `name_or_path`. Starting from weights is not resuming: iterations, optimizer
    and memory start fresh (`ckpt_path` resumes)."""

    @property
    def weights(self) -> str:
        """Where the starting weights are read from."""
        return self.init_from or self.name_or_path


@dataclass
class EnvConfig:
    name: str = "keyroom"
    """Registered environment name (see `empo2.envs.registry`); not read when `env.cls` is set (it
    keeps its default in `--print-config` and config.yaml then)."""
    cls: Optional[str] = None
    """Your own environment class as `package.module:ClassName`; overrides `name`."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the environment's constructor."""
    train_instances: Optional[list[str]] = None
    """Instance ids to train on; default: the environment's train split."""
    test_instances: Optional[list[str]] = None
    """Instance ids to evaluate on; default: the environment's test split."""
    max_turns: Optional[int] = count_or_none(None)
    """Turn cap per episode; default: the environment's own (per task where it has one)."""
    pool_size: int = non_negative(0)
    """Most environment objects (simulator processes, e.g. JVMs) per rank; 0: one per episode
    played at once (B/ranks × N). A smaller pool starts waiting episodes as environments free up."""


@dataclass
class RolloutConfig:
    tasks_per_iteration: int = positive(2)
    """B: environment instances sampled per iteration."""
    group_size: int = positive(4)
    """N: rollouts per instance (the GRPO group)."""
    temperature: float = non_negative(1.0)
    """Sampling temperature for training rollouts."""
    max_new_tokens: int = positive(32)
    """Max response tokens per step."""
    max_prompt_tokens: int = positive(4500)
    """Prompt budget; longer prompts drop the oldest turns of the history (counted in the metrics)."""
    env_threads: int = non_negative(0)
    """Threads that reset and step a turn's environments at once (`empo2.rollout`; trajectories are
    those of one thread): 0 means one per CPU core; 1 steps them one after another. Used only by
    environments whose instances share nothing (ScienceWorld, each its own JVM; KeyRoom), and it
    pays where they compute out of process."""
    stop: list[str] = field(default_factory=lambda: ["\n"])
    """Strings that end an action; the matching token is kept in the response."""
    history_tokens: str = choice("sampled", "parsed")
    """How the agent's earlier turns appear in later prompts: `sampled` repeats the response token
    ids exactly as sampled, so each step's prompt is a prefix of the next and an episode trains as
    one sequence (`optim.sequences: shared`); `parsed` re-renders the parsed action through the chat
    template (the authors' code; every step is then its own sequence)."""
    instruction: str = choice("every_turn", "latest")
    """Where the environment's short per-turn instruction goes: `every_turn` (every user message,
    kept in the history, so prompts chain) or `latest` (the latest user message only, as in the
    authors' code; no chain)."""
    history_drop: str = choice("half", "fit")
    """A prompt over `max_prompt_tokens` drops its oldest turns (never the first message): `half`
    drops at least half of the history turns, so later steps chain again for a while (each drop
    starts a new shared sequence); `fit` drops the fewest that fit (more history seen, but near the
    budget every step becomes its own sequence)."""

    @property
    def env_thread_count(self) -> int:
        import os

        return self.env_threads or os.cpu_count() or 1

    @property
    def prompt_layout(self) -> PromptLayout:
        return PromptLayout(self.history_tokens, self.instruction == "every_turn", history_drop=self.history_drop)


@dataclass
class EngineConfig:
    kind: str = choice("auto", "hf", "vllm")
    """Rollout engine: `hf` (transformers generate), `vllm`, or `auto` (vllm when installed, except
    LoRA on CPU where hf is faster; else hf)."""
    max_batch_size: int = positive(64)
    """Most sequences generated at once (HF: per `generate` call; vLLM: `max_num_seqs`)."""
    prefix_cache: bool = True
    """HF engine: keep the key/value cache of the last `generate` call and encode only the new
    tokens of prompts that extend it (an episode's next turn); off: every prompt is encoded whole.
    Costs the cache's memory during the rollout (dropped when it ends); vLLM has its own."""
    merge_lora: bool = True
    """HF engine, float32 LoRA policy: generate with a copy whose weights have the adapters folded in
    (W + s·B·A), rewritten from the policy whenever its weights moved; the trainer keeps its adapters
    and nothing is unmerged. Saves the adapters' share of every decode step (10-20% on the embedded
    model) for one more copy of the base weights. Ignored under bf16/fp16 compute, where folding a
    small update into 16-bit weights would round much of it away."""
    dtype: Optional[str] = choice(None, "float32", "bfloat16", "float16")
    """vLLM weight dtype; default `model.dtype` (on GPU, `bfloat16` serves an fp32-trained policy faster)."""
    max_model_len: Optional[int] = None
    """vLLM context length; default the longest of a rollout prompt + action and a tip prompt + tip."""
    gpu_memory_utilization: float = positive(0.35)
    """vLLM on GPU: share of GPU memory for its weights and KV cache (the trainer shares the GPU)."""
    tensor_parallel_size: int = positive(1)
    """vLLM on GPU: GPUs one engine spans (colocated, one engine per rank)."""
    sleep_between_phases: bool = True
    """vLLM on GPU: release the KV cache and offload weights during the update (sleep mode); no-op on CPU."""
    cpu_kv_cache_gb: float = positive(2.0)
    """vLLM on CPU: memory for the KV cache (GB)."""
    verify_tolerance: float = positive(0.02)
    """After each weight sync the engine's log-probs of a probe response must be within this (mean
    |engine − trainer|) of the trainer's, else the run stops: a stale engine is an error."""


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    """Advantage estimator (registry in `empo2.advantage`): `grpo` (trajectory level), `grpo_step`,
    or step-level credit: `gigpo` (GRPO plus anchor-state step groups) or `hgpo` (a weighted
    hierarchy of step groups by shared state history, as released by its authors: step-level
    alone). Any of them works with the memory modes."""
    adv_eps: float = non_negative(1e-6)
    """Epsilon in the std normalisation of the advantage."""
    loss: str = "dual_clip_ppo"
    """Policy loss (registry in `empo2.loss`)."""
    clip_low: float = non_negative(0.2)
    """PPO ε_low: ratio floor is 1 − clip_low."""
    clip_high: float = non_negative(0.3)
    """PPO ε_high: ratio ceiling is 1 + clip_high."""
    dual_clip: float = positive(10.0)
    """Dual-clip constant c: for A < 0 the loss is capped at −c·A."""
    log_ratio_clamp: float = 20.0
    """log π_θ − log π_old is clamped to ±this before exp."""
    kl_coef: float = non_negative(0.0)
    """Weight of a KL penalty to the reference policy (the initial weights; with LoRA the base model
    with adapters off), token-mean like the policy loss. 0 (ScienceWorld) skips it; WebShop uses 0.01."""
    kl_estimator: str = "low_var_kl"
    """Per-token KL estimator (registry in `empo2.loss`): `low_var_kl` (k3), `k1` or `k2`."""
    gamma: float = discount(1.0)
    """Discount of the return each episode is judged by: R = Σ_t γ^t (r_t + r_int,t); 1 is the plain
    sum of EMPO2.md §5 (WebShop: 0.95, so an earlier successful purchase is worth more)."""
    step_gamma: float = discount(0.95)
    """gigpo/hgpo: discount of each step's return-to-go G_t = Σ_k γ^(k−t) (r_k + r_int,k) (GiGPO's 0.95)."""
    step_weight: float = non_negative(1.0)
    """gigpo: ω, the weight of the step-level advantage added to the episode-level one (GiGPO's 1;
    0 gives `grpo` exactly). hgpo has no episode-level part to add to (see `hgpo_episode_level`)."""
    step_norm: str = choice("std", "mean")
    """gigpo/hgpo: normalisation within a step group, `std` ((G − mean) / (std + adv_eps); gigpo the
    unbiased std, hgpo the population std, as each was released) or `mean` (G − mean; gigpo then
    also centres its episode-level part without dividing by the std)."""
    history_levels: int = non_negative(2)
    """hgpo: K, the deepest level of shared history: level k groups the steps whose last k + 1
    states are the same (k = 0: the anchor state); a step at turn t < k has no level k."""
    level_alpha: float = non_negative(1.0)
    """hgpo: level k weighs (k + 2)^α in the average over the levels whose advantage is not 0."""
    hgpo_episode_level: bool = False
    """hgpo: also average in the episode-level GRPO advantage as one more level (weight 1); off,
    as in the released HGPO, the step's advantage is its levels' average alone."""


@dataclass
class ModeConfig:
    p: float = probability(0.25)
    """Probability of a memory iteration (rollouts with retrieved tips); p = 0 is plain GRPO."""
    q: float = probability(0.6666666666666666)
    """Probability that a memory iteration updates off-policy (tips removed from the trained prompt)."""
    granularity: str = choice("iteration", "group")
    """Draw the mode once per `iteration` (paper) or once per `group`."""


@dataclass
class MemoryConfig:
    enabled: bool = True
    """Write tips after every training episode and retrieve them in memory modes."""
    key: str = choice("state", "history")
    """Entry key: embedding of the `state` at the step (paper) or of the flattened chat `history` (code)."""
    tips_in_history: str = choice("all", "current")
    """`all`: every step keeps its own tips in the history; `current`: only the latest step shows tips."""
    threshold: float = cosine(0.5)
    """Retrieval keeps entries with cosine similarity above this."""
    top_k: int = positive(10)
    """Most tips retrieved per step (highest episode score first, ties oldest first)."""
    capacity: int = positive(1000)
    """Entries per slot; the oldest are dropped first."""
    tip_source: str = choice("model", "trace")
    """Who writes a tip: `model`, the policy itself (the paper, EMPO2.md §3.3), or `trace`, fixed rules
    over the episode's own record (the actions that scored, those that lost points, the final
    score; `empo2.trace_tips`): our ablation for models too small to write useful tips, never the
    paper's setting."""
    tip_prompt: str = choice("episode", "transcript")
    """What the policy reads before writing a tip (`tip_source: model`): `episode`, the episode's last
    prompt exactly as the policy saw it, its last response, then the final observation and the
    request (the engine continues from the episode's cached keys and values, so only that tail is
    encoded; an episode shown tips falls back to `transcript`, which leaves them out); `transcript`,
    the episode re-written from its parsed actions without the per-turn instruction (every episode
    encoded again; the only form before December 2026)."""
    tip_prompt_room: int = non_negative(128)
    """How far a tip prompt may run past `rollout.max_prompt_tokens`, so an episode whose last prompt
    filled that budget still has its tip continue the episode's cache (longer tip prompts take the
    transcript form, cut to the sum)."""
    tip_max_tokens: int = positive(128)
    """Max tokens of a generated tip."""
    tip_temperature: float = non_negative(1.0)
    """Sampling temperature for tip generation."""
    embed_batch_size: int = positive(64)
    """Texts per embedding call."""
    init_from: Optional[str] = None
    """A memory folder (another run's `<run>/memory`) copied into this run's at a fresh start, so
    training begins with those tips; ignored on resume (the checkpoint's memory is restored)."""


@dataclass
class OffPolicyConfig:
    old_logprob: str = choice("without_tips", "with_tips")
    """Old log-probs of off-policy rows on the tip-free prompt (paper) or `with_tips` (merged code)."""


@dataclass
class MaskConfig:
    level: str = choice("token", "step", "none")
    """Low-probability masking per `token` (paper Eq. 2) or whole `step` (code), or `none`."""
    log_delta: float = -5.0
    """Tokens whose tip-free old log-prob is below this are masked."""
    apply_to: str = choice("off_policy", "all")
    """Rows masking applies to: `off_policy` or `all`."""


@dataclass
class IntrinsicConfig:
    kind: str = choice("novelty", "retrieval_count", "none")
    """`novelty` (1/n over a per-slot state table), `retrieval_count` (1/(k+1)), or `none`."""
    coef: float = non_negative(1.0)
    """Scale of the intrinsic reward (`combine: reward`), or weight of its advantage (`combine: advantage`)."""
    combine: str = choice("reward", "advantage")
    """`reward`: added to the step rewards before the advantage (EMPO2.md §5); `advantage`: the
    estimator runs on extrinsic and intrinsic rewards apart and A = A_ext + coef · A_int, so the
    bonus cannot outweigh success in groups whose extrinsic returns tie."""
    threshold: float = cosine(0.9)
    """Novelty: states with cosine similarity above this count as seen."""


@dataclass
class OptimConfig:
    lr: float = positive(1e-6)
    """AdamW learning rate (constant)."""
    weight_decay: float = non_negative(0.01)
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float = non_negative(1.0)
    """Max global gradient norm (0 disables clipping)."""
    mini_batch_size: int = positive(128)
    """Step rows per optimizer step (the PPO mini-batch)."""
    micro_batch_size: int = positive(8)
    """Most step rows per forward/backward (an upper bound: the token budget usually decides);
    gradients accumulate over a mini-batch."""
    max_tokens_per_micro_batch: Optional[int] = None
    """Most tokens per forward/backward of the update and of the old/reference log-prob passes, as
    the forward sees them (padding included). Peak memory grows with it, not with prompt length ×
    rows: ~2.4 MB per budget token for the embedded 135M model in fp32, LoRA (BENCHMARKS.md). Default:
    one longest possible row, `rollout.max_prompt_tokens + rollout.max_new_tokens`; it must be at
    least that."""
    token_layout: str = choice("auto", "padded", "packed")
    """How a micro-batch's rows become tensors: `padded` (left-padded prompts, right-padded
    responses), `packed` (one sequence, positions restarting per row, no padding: variable-length
    kernels under flash attention), or `auto`: packed when the model runs flash attention, else
    padded (as fast on CPU, and sdpa kernels there keep memory linear with a padding mask)."""
    ppo_epochs: int = positive(1)
    """Passes over an iteration's rows."""
    sequences: str = choice("shared", "per_step")
    """`shared`: an episode's steps whose prompts chain (see `rollout.history_tokens`) are scored and
    trained as one sequence with a response span per step (one forward per episode instead of one per
    step; mini-batches are then made of whole episodes' segments); `per_step`: one sequence per step."""


@dataclass
class LoggingConfig:
    loggers: list[str] = field(default_factory=lambda: ["csv"])
    """Any of csv, tensorboard, wandb."""
    trajectories: bool = True
    """Write every training episode to `trajectories/iter_XXXXX.jsonl` in the run directory."""
    progress_bar: bool = True
    """Show a progress bar over rollout episodes."""


@dataclass
class ShardingConfig:
    mixed_precision: str = choice("none", "bf16", "fp16")
    """fsdp/fsdp2 only: `bf16` or `fp16` computes in that dtype while the sharded float32 weights,
    gradient reduction and optimizer stay float32; `none` computes in `model.dtype`."""
    reshard_after_forward: bool = True
    """fsdp/fsdp2 only: free the gathered weights of a layer after its forward (less memory, one more
    all-gather in backward)."""
    sharded_checkpoint: Optional[bool] = None
    """fsdp/fsdp2 only: `true` writes a folder with every rank's shard, `false` one whole file
    gathered on rank 0; unset (null) shards full fine-tuning and keeps LoRA adapters (small) whole."""


@dataclass
class CheckpointConfig:
    every_n_iterations: int = positive(1)
    """Save a checkpoint every this many iterations; `last.ckpt` links to the newest."""
    keep: int = 1
    """How many periodic checkpoints to keep (-1 keeps all; at least 1, since `last.ckpt` is a
    link to the newest periodic one)."""


@dataclass
class Config:
    name: str = "run"
    """Run name; the run directory is `<out_dir>/<name>`."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    seed: int = 0
    """Base seed; iteration k reseeds every RNG from (seed, k, rank), so resume is exact."""
    ckpt_path: Optional[str] = None
    """Resume from `last`, or from a checkpoint path."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Policy model."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout sampling."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout engine."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """Advantage and loss."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and batching."""
    mode: ModeConfig = field(default_factory=ModeConfig)
    """EMPO² mode sampler (EMPO2.md §2)."""
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    """Tip memory (EMPO2.md §4)."""
    offpolicy: OffPolicyConfig = field(default_factory=OffPolicyConfig)
    """Off-policy update (EMPO2.md §6.3)."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    """Low-probability masking (EMPO2.md §6.4)."""
    intrinsic: IntrinsicConfig = field(default_factory=IntrinsicConfig)
    """Intrinsic reward (EMPO2.md §5)."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Loggers and trajectory files."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation: `python -m empo2.evaluate` and the validation callback."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    """Adaptation with memory only (`python -m empo2.adapt`, EMPO2.md §8)."""
    compare: CompareConfig = field(default_factory=CompareConfig)
    """Baselines in one harness (`python -m empo2.compare`)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Supervised warm start on demonstrations (`python -m empo2.sft`)."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Exporting a trained policy as a Hugging Face folder (`python -m empo2.export`)."""
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    """Options of the sharded strategies (`trainer.strategy` fsdp or fsdp2)."""
    trainer: dict[str, Any] = field(default_factory=lambda: {"accelerator": "cpu", "devices": 1, "max_epochs": 3})
    """Passed to `lightning.Trainer`; `max_epochs` is the number of RL iterations."""

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def tip_prompt_tokens(self) -> int:
        """Longest tip prompt: `rollout.max_prompt_tokens` + `memory.tip_prompt_room`."""
        return self.rollout.max_prompt_tokens + self.memory.tip_prompt_room

    @property
    def micro_batch_tokens(self) -> int:
        """`optim.max_tokens_per_micro_batch`, or one longest possible row when unset."""
        return self.optim.max_tokens_per_micro_batch or self.rollout.max_prompt_tokens + self.rollout.max_new_tokens


def _load_yaml_layer(path: Path) -> DictConfig:
    """One YAML file as a config layer: a mapping whose sections (model, rollout, ...) are mappings."""
    try:
        layer = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - YAML syntax errors come from several libraries
        raise ConfigError(f"config file {path}: not valid YAML ({yaml_error_text(err)})") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config file {path}: expected `key: value` lines at the top, got a list")
    if not layer:
        raise ConfigError(f"config file {path}: empty; write the settings to change as `section: ...` lines "
                          f"(conf/quickstart.yaml is an example), or leave --config out for the defaults")
    defaults = Config()
    raw = OmegaConf.to_container(layer, resolve=False)
    for key, value in raw.items():
        if is_dataclass(getattr(defaults, str(key), None)) and not isinstance(value, dict):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ConfigError(f"{key}: expected a section of `name: value` lines in {path}, got {shown}")
    return layer


def load_config(
    path: Optional[str | Path | Sequence[str | Path]] = None, overrides: Optional[list[str]] = None
) -> Config:
    """Merge schema defaults, YAML files (later ones win, e.g. a run config then a preset from
    `conf/strategy/`) and `key=value` overrides; validate; return."""
    schema = OmegaConf.structured(Config)
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    try:
        layers = [schema]
        for item in map(Path, paths):
            if not item.is_file():
                raise ConfigError(f"config file not found: {item}")
            layers.append(_load_yaml_layer(item))
        if overrides:
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override {item!r}: expected key=value")
                check_section_override(Config(), item)
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        OmegaConf.resolve(merged)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = (getattr(err, "msg", None) or str(err) or type(err).__name__).splitlines()[0]
        msg = msg.split(". Did you mean")[0]  # OmegaConf's own hint, when it has one, names no section
        raise ConfigError(f"{key}: {msg}{did_you_mean(Config(), str(key))}" if key else msg) from None
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Every check of a config built in code (as `load_config` runs them on what it loads): each
    field's declared choice or range, then the checks across fields."""
    check_fields(cfg)
    check_values(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(out, dict)
    return out
