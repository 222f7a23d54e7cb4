"""Typed configuration schema: YAML + CLI overrides validated before anything heavy loads.

Why this shape: every field is a dataclass attribute with a docstring right under it (as in
litgpt), so the schema *is* the documentation. `field_docs()` reads those docstrings back with
`ast`, and the README's config reference is generated from them (a test keeps the two equal).
OmegaConf merges YAML and `key=value` overrides onto the structured schema, which rejects unknown
keys and wrong types with the dotted key path; value checks (ranges, choices) run right after, also
naming the key. `trainer` is a free mapping passed straight to `lightning.Trainer`, checked
against that constructor's signature, so every Trainer option works without being mirrored here.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import textwrap
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from empo2.conversation import PromptLayout


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key."""


@dataclass
class LoraConfig:
    enabled: bool = True
    """Train LoRA adapters through peft; false trains all weights (full fine-tuning)."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
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
    dtype: str = "float32"
    """Weight dtype: float32, bfloat16 or float16. Mixed precision is `trainer.precision` (ddp, auto)
    or `sharding.mixed_precision` (fsdp, fsdp2)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
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
    """Registered environment name (see `empo2.envs.registry`)."""
    cls: Optional[str] = None
    """Your own environment class as `package.module:ClassName`; overrides `name`."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the environment's constructor."""
    train_instances: Optional[list[str]] = None
    """Instance ids to train on; default: the environment's train split."""
    test_instances: Optional[list[str]] = None
    """Instance ids to evaluate on; default: the environment's test split."""
    max_turns: Optional[int] = None
    """Turn cap per episode; default: the environment's own (per task where it has one)."""
    pool_size: int = 0
    """Most environment objects (simulator processes, e.g. JVMs) per rank; 0: one per episode
    played at once (B/ranks × N). A smaller pool starts waiting episodes as environments free up."""


@dataclass
class RolloutConfig:
    tasks_per_iteration: int = 2
    """B: environment instances sampled per iteration."""
    group_size: int = 4
    """N: rollouts per instance (the GRPO group)."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts."""
    max_new_tokens: int = 32
    """Max response tokens per step."""
    max_prompt_tokens: int = 4500
    """Prompt budget; longer prompts drop the oldest turns of the history (counted in the metrics)."""
    stop: list[str] = field(default_factory=lambda: ["\n"])
    """Strings that end an action; the matching token is kept in the response."""
    history_tokens: str = "sampled"
    """How the agent's earlier turns appear in later prompts: `sampled` repeats the response token
    ids exactly as sampled, so each step's prompt is a prefix of the next and an episode trains as
    one sequence (`optim.sequences: shared`); `parsed` re-renders the parsed action through the chat
    template (the authors' code; every step is then its own sequence)."""
    instruction: str = "every_turn"
    """Where the environment's short per-turn instruction goes: `every_turn` (every user message,
    kept in the history, so prompts chain) or `latest` (the latest user message only, as in the
    authors' code; no chain)."""

    history_drop: str = "half"
    """A prompt over `max_prompt_tokens` drops its oldest turns (never the first message): `half`
    drops at least half of the history turns, so later steps chain again for a while (each drop
    starts a new shared sequence); `fit` drops the fewest that fit (more history seen, but near the
    budget every step becomes its own sequence)."""

    @property
    def prompt_layout(self) -> PromptLayout:
        return PromptLayout(self.history_tokens, self.instruction == "every_turn", history_drop=self.history_drop)


@dataclass
class EngineConfig:
    kind: str = "auto"
    """Rollout engine: `hf` (transformers generate), `vllm`, or `auto` (vllm when installed, except
    LoRA on CPU where hf is faster; else hf)."""
    max_batch_size: int = 64
    """Most sequences generated at once (HF: per `generate` call; vLLM: `max_num_seqs`)."""
    dtype: Optional[str] = None
    """vLLM weight dtype; default `model.dtype` (on GPU, `bfloat16` serves an fp32-trained policy faster)."""
    max_model_len: Optional[int] = None
    """vLLM context length; default `rollout.max_prompt_tokens` + the longest generation (action or tip)."""
    gpu_memory_utilization: float = 0.35
    """vLLM on GPU: share of GPU memory for its weights and KV cache (the trainer shares the GPU)."""
    tensor_parallel_size: int = 1
    """vLLM on GPU: GPUs one engine spans (colocated, one engine per rank)."""
    sleep_between_phases: bool = True
    """vLLM on GPU: release the KV cache and offload weights during the update (sleep mode); no-op on CPU."""
    cpu_kv_cache_gb: float = 2.0
    """vLLM on CPU: memory for the KV cache (GB)."""
    verify_tolerance: float = 0.02
    """After each weight sync the engine's log-probs of a probe response must be within this (mean
    |engine − trainer|) of the trainer's, else the run stops: a stale engine is an error."""


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    """Advantage estimator (registry in `empo2.advantage`): `grpo` (trajectory level), `grpo_step`,
    or step-level credit on top of `grpo`: `gigpo` (anchor-state step groups) or `hgpo` (a hierarchy
    of step groups by shared history). Any of them works with the memory modes."""
    adv_eps: float = 1e-6
    """Epsilon in the std normalisation of the advantage."""
    loss: str = "dual_clip_ppo"
    """Policy loss (registry in `empo2.loss`)."""
    clip_low: float = 0.2
    """PPO ε_low: ratio floor is 1 − clip_low."""
    clip_high: float = 0.3
    """PPO ε_high: ratio ceiling is 1 + clip_high."""
    dual_clip: float = 10.0
    """Dual-clip constant c: for A < 0 the loss is capped at −c·A."""
    log_ratio_clamp: float = 20.0
    """log π_θ − log π_old is clamped to ±this before exp."""
    kl_coef: float = 0.0
    """Weight of a KL penalty to the reference policy (the initial weights; with LoRA the base model
    with adapters off), token-mean like the policy loss. 0 (ScienceWorld) skips it; WebShop uses 0.01."""
    kl_estimator: str = "low_var_kl"
    """Per-token KL estimator (registry in `empo2.loss`): `low_var_kl` (k3), `k1` or `k2`."""
    gamma: float = 1.0
    """Discount of the return each episode is judged by: R = Σ_t γ^t (r_t + r_int,t); 1 is the plain
    sum of EMPO2.md §5 (WebShop: 0.95, so an earlier successful purchase is worth more)."""
    step_gamma: float = 0.95
    """gigpo/hgpo: discount of each step's return-to-go G_t = Σ_k γ^(k−t) (r_k + r_int,k) (GiGPO's 0.95)."""
    step_weight: float = 1.0
    """gigpo/hgpo: ω, the weight of the step-level advantage added to the episode-level one
    (GiGPO's 1; 0 gives `grpo` exactly)."""
    step_norm: str = "std"
    """gigpo/hgpo: normalisation within a step group, `std` ((G − mean) / (std + adv_eps)) or `mean`
    (G − mean)."""
    history_levels: int = 2
    """hgpo: K, the deepest level of shared history (level k: same state and same last k steps)."""
    level_alpha: float = 1.0
    """hgpo: level k weighs (k + 1)^α among the levels whose step group has two or more steps."""


@dataclass
class ModeConfig:
    p: float = 0.25
    """Probability of a memory iteration (rollouts with retrieved tips); p = 0 is plain GRPO."""
    q: float = 0.6666666666666666
    """Probability that a memory iteration updates off-policy (tips removed from the trained prompt)."""
    granularity: str = "iteration"
    """Draw the mode once per `iteration` (paper) or once per `group`."""


@dataclass
class MemoryConfig:
    enabled: bool = True
    """Write tips after every training episode and retrieve them in memory modes."""
    key: str = "state"
    """Entry key: embedding of the `state` at the step (paper) or of the flattened chat `history` (code)."""
    tips_in_history: str = "all"
    """`all`: every step keeps its own tips in the history; `current`: only the latest step shows tips."""
    threshold: float = 0.5
    """Retrieval keeps entries with cosine similarity above this."""
    top_k: int = 10
    """Most tips retrieved per step (highest episode score first, ties oldest first)."""
    capacity: int = 1000
    """Entries per slot; the oldest are dropped first."""
    tip_max_tokens: int = 128
    """Max tokens of a generated tip."""
    tip_temperature: float = 1.0
    """Sampling temperature for tip generation."""
    embed_batch_size: int = 64
    """Texts per embedding call."""
    init_from: Optional[str] = None
    """A memory folder (another run's `<run>/memory`) copied into this run's at a fresh start, so
    training begins with those tips; ignored on resume (the checkpoint's memory is restored)."""


@dataclass
class OffPolicyConfig:
    old_logprob: str = "without_tips"
    """Old log-probs of off-policy rows on the tip-free prompt (paper) or `with_tips` (merged code)."""


@dataclass
class MaskConfig:
    level: str = "token"
    """Low-probability masking per `token` (paper Eq. 2) or whole `step` (code), or `none`."""
    log_delta: float = -5.0
    """Tokens whose tip-free old log-prob is below this are masked."""
    apply_to: str = "off_policy"
    """Rows masking applies to: `off_policy` or `all`."""


@dataclass
class IntrinsicConfig:
    kind: str = "novelty"
    """`novelty` (1/n over a per-slot state table), `retrieval_count` (1/(k+1)), or `none`."""
    coef: float = 1.0
    """Scale of the intrinsic reward."""
    threshold: float = 0.9
    """Novelty: states with cosine similarity above this count as seen."""


@dataclass
class OptimConfig:
    lr: float = 1e-6
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 disables clipping)."""
    mini_batch_size: int = 128
    """Step rows per optimizer step (the PPO mini-batch)."""
    micro_batch_size: int = 8
    """Most step rows per forward/backward (an upper bound: the token budget usually decides);
    gradients accumulate over a mini-batch."""
    max_tokens_per_micro_batch: Optional[int] = None
    """Most tokens per forward/backward of the update and of the old/reference log-prob passes, as
    the forward sees them (padding included). Peak memory grows with it, not with prompt length ×
    rows: ~2.4 MB per budget token for the embedded 135M model in fp32, LoRA (BENCHMARKS.md). Default:
    one longest possible row, `rollout.max_prompt_tokens + rollout.max_new_tokens`; it must be at
    least that."""
    token_layout: str = "auto"
    """How a micro-batch's rows become tensors: `padded` (left-padded prompts, right-padded
    responses), `packed` (one sequence, positions restarting per row, no padding: variable-length
    kernels under flash attention), or `auto`: packed when the model runs flash attention, else
    padded (as fast on CPU, and sdpa kernels there keep memory linear with a padding mask)."""
    ppo_epochs: int = 1
    """Passes over an iteration's rows."""
    sequences: str = "shared"
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
class EvalConfig:
    split: str = "test"
    """Instances evaluated: the environment's `test` (or `train`) split, or `env.test_instances`."""
    episodes_per_instance: int = 4
    """Episodes played per instance (EMPO2.md §8: 4 per test variation)."""
    temperature: float = 0.4
    """Sampling temperature for evaluation (no memory is used)."""
    max_instances: Optional[int] = None
    """Evaluate only the first this many instances of the split (all by default)."""
    val_every: int = 0
    """During fit, evaluate every this many iterations (0: never); tables go to `<run>/eval/`."""


@dataclass
class AdaptConfig:
    target_task: Optional[str] = None
    """`python -m empo2.adapt`: the task to adapt to (the environment retargets `env.options`;
    ScienceWorld: a task name); unset: the task(s) the config trains on."""
    iterations: int = 10
    """Adaptation iterations; iteration 0 plays without memory, later ones retrieve tips."""
    split: str = "train"
    """Which instances of the target task are played: `train` or `test`."""
    temperature: Optional[float] = None
    """Sampling temperature while adapting; unset: `rollout.temperature`."""


@dataclass
class CompareConfig:
    methods: list[str] = field(default_factory=lambda: ["naive", "reflexion", "grpo", "empo2"])
    """`python -m empo2.compare`: methods to run (naive, warm_start, reflexion, grpo, gigpo, hgpo,
    empo2)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds; every method runs once per seed and task."""
    tasks: Optional[list[str]] = None
    """Tasks (the environment retargets `env.options`, as for adaptation); unset: the config's own."""
    warm_start: bool = False
    """Run `empo2.sft` (the `sft.*` settings, seed of the first seed) once per task first, and start
    every method from its weights; the method `warm_start` scores that policy without training."""


@dataclass
class SFTConfig:
    tasks: Optional[list[str]] = None
    """`python -m empo2.sft`: the tasks whose demonstrations it trains on (the environment retargets
    `env.options` to each, as for adaptation); unset: the config's own task."""
    options: dict[str, Any] = field(default_factory=dict)
    """`env.options` entries replaced for the demonstrations only (e.g. a smaller KeyRoom house), so
    a warm start can teach the action format on instances evaluation never plays."""
    split: str = "train"
    """Which split of the demonstration environment's instances is demonstrated."""
    max_instances: Optional[int] = None
    """Demonstrate at most this many instances per task (the first ones of the split)."""
    val_fraction: float = 0.2
    """Share of the demonstrations held out to measure the log-likelihood of unseen ones."""
    epochs: int = 3
    """Passes over the demonstration rows."""
    lr: float = 1e-4
    """AdamW learning rate (weight decay and betas as `optim.*`)."""
    batch_size: int = 8
    """Rows (one prompt + the demonstrated answer) per optimizer step."""


@dataclass
class ShardingConfig:
    mixed_precision: str = "none"
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
    every_n_iterations: int = 1
    """Save a checkpoint every this many iterations (always also `last.ckpt`)."""
    keep: int = 1
    """How many periodic checkpoints to keep besides `last` (-1 keeps all; at least 1, since
    Lightning writes `last.ckpt` only beside a periodic one)."""


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
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    """Options of the sharded strategies (`trainer.strategy` fsdp or fsdp2)."""
    trainer: dict[str, Any] = field(
        default_factory=lambda: {"accelerator": "cpu", "devices": 1, "max_epochs": 3}
    )
    """Passed to `lightning.Trainer`; `max_epochs` is the number of RL iterations."""

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def micro_batch_tokens(self) -> int:
        """`optim.max_tokens_per_micro_batch`, or one longest possible row when unset."""
        return self.optim.max_tokens_per_micro_batch or self.rollout.max_prompt_tokens + self.rollout.max_new_tokens


# --------------------------------------------------------------------------- value checks

_CHOICES = {
    "model.dtype": ("float32", "bfloat16", "float16"),
    "optim.token_layout": ("auto", "padded", "packed"),
    "optim.sequences": ("shared", "per_step"),
    "rollout.history_tokens": ("sampled", "parsed"),
    "rollout.instruction": ("every_turn", "latest"),
    "rollout.history_drop": ("half", "fit"),
    "engine.kind": ("auto", "hf", "vllm"),
    "mode.granularity": ("iteration", "group"),
    "memory.key": ("state", "history"),
    "memory.tips_in_history": ("all", "current"),
    "offpolicy.old_logprob": ("without_tips", "with_tips"),
    "mask.level": ("token", "step", "none"),
    "algo.step_norm": ("std", "mean"),
    "mask.apply_to": ("off_policy", "all"),
    "intrinsic.kind": ("novelty", "retrieval_count", "none"),
    "eval.split": ("test", "train"),
    "engine.dtype": (None, "float32", "bfloat16", "float16"),
    "sharding.mixed_precision": ("none", "bf16", "fp16"),
    "adapt.split": ("train", "test"),
    "sft.split": ("train", "test"),
}
_POSITIVE = (
    "rollout.tasks_per_iteration", "rollout.group_size", "rollout.max_new_tokens",
    "rollout.max_prompt_tokens", "engine.max_batch_size", "optim.mini_batch_size",
    "optim.micro_batch_size", "optim.ppo_epochs", "optim.lr", "model.lora.r",
    "checkpoint.every_n_iterations", "algo.dual_clip", "memory.top_k", "memory.capacity",
    "memory.tip_max_tokens", "memory.embed_batch_size", "eval.episodes_per_instance",
    "engine.gpu_memory_utilization", "engine.tensor_parallel_size", "engine.cpu_kv_cache_gb",
    "engine.verify_tolerance", "adapt.iterations", "sft.epochs", "sft.lr", "sft.batch_size",
)
_NON_NEGATIVE = (
    "rollout.temperature", "eval.temperature", "eval.val_every", "env.pool_size", "optim.weight_decay", "optim.grad_clip",
    "algo.clip_low", "algo.clip_high", "algo.adv_eps", "model.lora.dropout", "intrinsic.coef",
    "memory.tip_temperature", "algo.kl_coef", "algo.step_weight", "algo.history_levels", "algo.level_alpha",
)
COMPARE_METHODS = ("naive", "warm_start", "reflexion", "grpo", "gigpo", "hgpo", "empo2")
_PROBABILITIES = ("mode.p", "mode.q")
# Logger name -> packages that provide it (any one of them).
_LOGGER_PACKAGES: dict[str, tuple[str, ...]] = {"csv": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
# Trainer options the trainer sets itself (one epoch = one RL iteration built by the datamodule).
_TRAINER_OWNED = ("reload_dataloaders_every_n_epochs", "use_distributed_sampler", "logger")


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check_env_options(cfg: Config) -> None:
    """`env.options` must bind to the environment's constructor (checked without building it)."""
    from empo2.envs.base import env_class

    try:
        cls = env_class(cfg.env.name, cfg.env.cls)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        inspect.signature(cls.__init__).bind(None, **cfg.env.options)
    except TypeError as err:
        raise ConfigError(f"env.options: {err} (for {cls.__name__})") from None
    check = getattr(cls, "check_options", None)
    if callable(check):
        try:
            check(**cfg.env.options)
        except (ValueError, OSError) as err:  # OSError: a data file the options name is missing
            msg = str(err)
            raise ConfigError(msg if msg.startswith("env.options") else f"env.options: {msg}") from None


def check_values(cfg: Config) -> None:
    """Range and choice checks that a type alone cannot express."""
    for key, choices in _CHOICES.items():
        if _get(cfg, key) not in choices:
            raise ConfigError(f"{key}: {_get(cfg, key)!r} is not one of {', '.join(str(c) for c in choices)}")
    for key in _POSITIVE:
        if not _get(cfg, key) > 0:
            raise ConfigError(f"{key}: must be > 0, got {_get(cfg, key)!r}")
    for key in _NON_NEGATIVE:
        if not _get(cfg, key) >= 0:
            raise ConfigError(f"{key}: must be >= 0, got {_get(cfg, key)!r}")
    for key in _PROBABILITIES:
        if not 0 <= _get(cfg, key) <= 1:
            raise ConfigError(f"{key}: a probability in [0, 1], got {_get(cfg, key)!r}")
    for key in ("memory.threshold", "intrinsic.threshold"):
        if not -1 <= _get(cfg, key) <= 1:
            raise ConfigError(f"{key}: a cosine similarity in [-1, 1], got {_get(cfg, key)!r}")
    if cfg.mode.p > 0 and not cfg.memory.enabled:
        raise ConfigError("mode.p: memory modes need memory.enabled=true (or set mode.p=0 for plain GRPO)")
    for key in ("algo.gamma", "algo.step_gamma"):
        if not 0 < _get(cfg, key) <= 1:
            raise ConfigError(f"{key}: a discount in (0, 1], got {_get(cfg, key)}")
    if cfg.algo.clip_low >= 1:
        raise ConfigError(f"algo.clip_low: must be < 1, got {cfg.algo.clip_low}")
    longest_row = cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens
    budget = cfg.optim.max_tokens_per_micro_batch
    if budget is not None and budget < longest_row:
        raise ConfigError(
            f"optim.max_tokens_per_micro_batch: {budget} cannot hold one row of rollout.max_prompt_tokens + "
            f"rollout.max_new_tokens = {longest_row} tokens; raise it to >= {longest_row} (or lower "
            f"rollout.max_prompt_tokens), or leave it unset"
        )
    if cfg.checkpoint.keep == 0 or cfg.checkpoint.keep < -1:
        raise ConfigError(
            f"checkpoint.keep: {cfg.checkpoint.keep} keeps no checkpoint at all (Lightning writes last.ckpt only "
            f"beside a periodic one); use 1 or more, or -1 to keep all"
        )
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas: needs two numbers, got {cfg.optim.betas}")
    if cfg.env.max_turns is not None and cfg.env.max_turns < 1:
        raise ConfigError(f"env.max_turns: must be >= 1, got {cfg.env.max_turns}")
    if cfg.env.cls is not None and ":" not in cfg.env.cls:
        raise ConfigError(f"env.cls: expected 'package.module:ClassName', got {cfg.env.cls!r}")
    _check_env_options(cfg)
    if cfg.engine.max_model_len is not None and cfg.engine.max_model_len <= cfg.rollout.max_prompt_tokens:
        raise ConfigError(
            f"engine.max_model_len: {cfg.engine.max_model_len} leaves no room to generate after "
            f"rollout.max_prompt_tokens={cfg.rollout.max_prompt_tokens}"
        )
    unknown = [m for m in cfg.compare.methods if m not in COMPARE_METHODS]
    if unknown or not cfg.compare.methods:
        raise ConfigError(f"compare.methods: {unknown or 'empty'}; choose from {', '.join(COMPARE_METHODS)}")
    if not cfg.compare.seeds:
        raise ConfigError("compare.seeds: give at least one seed")
    if "warm_start" in cfg.compare.methods and not cfg.compare.warm_start:
        raise ConfigError("compare.methods: warm_start scores the `empo2.sft` policy; set compare.warm_start=true")
    if not 0 <= cfg.sft.val_fraction < 1:
        raise ConfigError(f"sft.val_fraction: a share in [0, 1), got {cfg.sft.val_fraction}")
    if cfg.sft.max_instances is not None and cfg.sft.max_instances < 1:
        raise ConfigError(f"sft.max_instances: must be >= 1, got {cfg.sft.max_instances}")
    init = cfg.model.init_from
    if init is not None and not (Path(init).expanduser() / "config.json").is_file():
        raise ConfigError(
            f"model.init_from: {init} is not a model folder (no config.json); point it at the policy/ "
            f"folder that `python -m empo2.sft` writes in its run directory"
        )
    if cfg.eval.max_instances is not None and cfg.eval.max_instances < 1:
        raise ConfigError(f"eval.max_instances: must be >= 1, got {cfg.eval.max_instances}")
    bad = [name for name in cfg.logging.loggers if name not in _LOGGER_PACKAGES]
    if bad:
        raise ConfigError(f"logging.loggers: unknown logger(s) {bad}; use {', '.join(_LOGGER_PACKAGES)}")
    for name in cfg.logging.loggers:
        needs = _LOGGER_PACKAGES[name]
        if needs and not any(importlib.util.find_spec(pkg) for pkg in needs):
            raise ConfigError(f"logging.loggers: {name} needs the package {needs[0]!r} (pip install {needs[0]})")
    _check_trainer(cfg.trainer)
    _check_strategy(cfg.trainer)
    from empo2.advantage import ADVANTAGES
    from empo2.loss import KL_ESTIMATORS, LOSSES

    ADVANTAGES.check("algo.advantage", cfg.algo.advantage)
    LOSSES.check("algo.loss", cfg.algo.loss)
    KL_ESTIMATORS.check("algo.kl_estimator", cfg.algo.kl_estimator)


def _check_trainer(trainer: dict[str, Any]) -> None:
    import lightning

    accepted = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key in _TRAINER_OWNED:
            raise ConfigError(f"trainer.{key}: set by empo2 itself and cannot be overridden")
        if key not in accepted:
            raise ConfigError(f"trainer.{key}: not an argument of lightning.Trainer")
    epochs = trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs: the number of RL iterations, an int >= 1; got {epochs!r}")


def _check_strategy(trainer: dict[str, Any]) -> None:
    strategy = trainer.get("strategy", "auto")
    if strategy == "fsdp" and trainer.get("accelerator") == "cpu":
        raise ConfigError("trainer.strategy: fsdp (FSDP1) runs on GPUs only; on CPU use fsdp2")
    if strategy in ("fsdp", "fsdp2") and "mixed" in str(trainer.get("precision", "")):
        raise ConfigError(
            f"trainer.precision: {trainer['precision']} does not apply to the policy that {strategy} wraps "
            f"itself; set sharding.mixed_precision=bf16 (or fp16) instead"
        )


# --------------------------------------------------------------------------- loading


def _load_yaml_layer(path: Path) -> DictConfig:
    """One YAML file as a config layer: a mapping whose sections (model, rollout, ...) are mappings."""
    try:
        layer = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - YAML syntax errors come from several libraries
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"config file {path}: not valid YAML ({first})") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"config file {path}: expected `key: value` lines at the top, got a list")
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
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        OmegaConf.resolve(merged)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = (getattr(err, "msg", None) or str(err) or type(err).__name__).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    assert isinstance(cfg, Config)
    check_values(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(out, dict)
    return out


# --------------------------------------------------------------------------- documentation


def field_docs(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, docstring) for every field, read from the attribute docstrings."""
    source = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    stmts = body.body
    for stmt, nxt in zip(stmts, stmts[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    rows: list[tuple[str, str, str]] = []
    default_obj = cls()
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        value = getattr(default_obj, f.name)
        if is_dataclass(value):
            rows.append((key, "", docs.get(f.name, "")))
            rows.extend(field_docs(type(value), prefix=f"{key}."))
        else:
            rows.append((key, repr(value), docs.get(f.name, "")))
    return rows


def reference_markdown() -> str:
    """The README's config reference table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in field_docs():
        default = default.replace("|", "\\|").replace("\n", "\\n")
        lines.append(f"| `{key}` | {'`' + default + '`' if default else ''} | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def update_readme(path: str | Path = "README.md") -> None:
    """Replace the README's config reference table (its last section) with the generated one."""
    path = Path(path)
    text = path.read_text()
    start = text.index("| key | default | meaning |")
    path.write_text(text[:start] + reference_markdown() + "\n")


if __name__ == "__main__":  # python -m empo2.config [--update-readme]
    import sys

    if "--update-readme" in sys.argv:
        update_readme()
    else:
        print(reference_markdown())
