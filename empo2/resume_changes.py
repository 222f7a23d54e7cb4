"""What a resumed run may change, decided before anything in the run directory is overwritten.

Why: resuming restores weights, optimizer state, the instance sampler and the memory of a run that
was started with `config.yaml`. A key changed on the command line of the resume either cannot apply
to that state (another model or LoRA shape, another environment or task set, another seed), or it
applies from the next iteration on. Nothing may be silently ignored: before this module, a new
`optim.lr` was overwritten by the restored optimizer state while `config.yaml` claimed it, and a new
LoRA rank died in a 457-line traceback after `config.yaml` had been replaced.

Three kinds of change:
- **refused** (`REFUSED`): the checkpoint's state was built for the old value (model and adapter
  shapes, LoRA scaling, environment, tasks, seed, memory keys and embedder, world size and
  strategy); one line names the keys and the way out;
- **optimizer** (`OPTIMIZER_KEYS`): values the restored optimizer state carries; the module sets the
  new ones into the restored optimizer (`EMPO2Module.on_train_start`), so they apply for real;
- everything else is read afresh every iteration (iterations, logging, evaluation cadence,
  sampling, loss settings, micro-batching) and applies from the resumed iteration on.
Applied changes are announced in one line; the new `config.yaml` then describes what runs (the
previous one is kept as `config.N.yaml`).
"""

from __future__ import annotations

from typing import Any

from empo2.config import ConfigError

REFUSED = (
    "model.name_or_path", "model.lora", "model.dtype", "model.init_from",
    "env.name", "env.cls", "env.options", "env.train_instances",
    "seed", "memory.key", "memory.enabled", "intrinsic.kind", "intrinsic.threshold",
    "trainer.devices", "trainer.num_nodes", "trainer.strategy", "sharding",
)
"""Keys (or sections) whose change the restored state cannot follow."""

OPTIMIZER_KEYS = ("optim.lr", "optim.weight_decay", "optim.betas")
"""Keys the restored optimizer state carries; set into it on resume."""

IGNORED = ("ckpt_path", "memory.init_from")
"""Keys that say how to start, not what runs."""


WHOLE = ("env.options", "sft.options")
"""Free-form option dicts compared as one value (they are one value to the environment)."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict → {dotted key: value}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in WHOLE:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def changed_keys(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, new value)} for every key whose value differs."""
    a, b = flatten(saved), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(IGNORED)}


def is_refused(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in REFUSED)


def check_resume_changes(saved: dict[str, Any], new: dict[str, Any], saved_path: str) -> list[str]:
    """Refuse changes the checkpoint cannot follow (ConfigError naming the keys); return the applied
    ones as `key: old -> new` lines."""
    changes = changed_keys(saved, new)
    refused = [k for k in changes if is_refused(k)]
    if refused:
        shown = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused[:4])
        raise ConfigError(
            f"ckpt_path: resuming cannot change {', '.join(refused)} (the run was started with {saved_path}: "
            f"{shown}); resume with the saved values, or start a new run under another name=..."
        )
    return [f"{k}: {old!r} -> {new_value!r}" for k, (old, new_value) in changes.items()]


INEXACT_RESUME = {
    "fsdp": "resume: under trainer.strategy=fsdp (FSDP1) a resumed run is known not to repeat the uninterrupted "
            "run exactly (GPU suite, 2026-11-26: iteration 1's rollouts differed; cause not found); training "
            "continues from the checkpoint, and trainer.strategy=fsdp2 resumes exactly",
}
"""Strategies whose resume is measured to differ from an uninterrupted run, and what to say about it."""


def resume_caveat(strategy: Any) -> str | None:
    """The line a resume under `strategy` prints before it starts, or None when its resume is exact."""
    return INEXACT_RESUME.get(str(strategy)) if strategy is not None else None
