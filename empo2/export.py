"""`python -m empo2.export --config FILE ckpt_path=last|PATH out=DIR [merge=true|false]`: a trained
policy as a Hugging Face folder.

Why a command of its own: a checkpoint is for resuming (Lightning's loop state, the optimizer, only
the adapters under LoRA, a folder of shards under fsdp/fsdp2). Serving the policy with vLLM,
evaluating it with another harness or publishing it needs the folder `transformers` opens. The
policy is rebuilt exactly as `evaluate` builds it (`EMPO2Module.from_checkpoint`: whole files and
folders of shards alike, every adapter accounted for), then written:
- `merge=true` (default): LoRA folded into the base weights, a self-contained model folder
  (`AutoModelForCausalLM.from_pretrained(DIR)`, vLLM's `model=DIR`);
- `merge=false` (LoRA runs): the adapters alone as a PEFT folder whose `adapter_config.json` names
  the base model they were trained on.
The tokenizer goes beside the weights, and `export.json` records where the folder came from (run,
checkpoint, iteration, a hash of the run's config, the base model). The folder is written as
`DIR.partial` and renamed when complete; an existing `DIR` is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from empo2.checkpoint import checkpoint_epoch, resolve_ckpt
from empo2.cli import Command, run_command
from empo2.config import Config, ConfigError, to_yaml

RECORD = "export.json"


def write_model_folder(policy: Any, tokenizer: Any, out: Path, merge: bool = True) -> None:
    """The policy (a PEFT model or a plain one) and its tokenizer as a folder `transformers` opens:
    merged weights, or with `merge=False` the adapters alone. Written next to `out` and renamed into
    place, so a crash never leaves half a folder."""
    if merge and hasattr(policy, "merge_and_unload"):
        policy = policy.merge_and_unload()
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    policy.config.use_cache = True  # training turns the cache off; generation wants it
    policy.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(out)


def config_hash(cfg: Config, ckpt: str) -> tuple[str, str]:
    """(sha256 of the run's config text, where it was read): the run's `config.yaml` beside its
    `checkpoints/` folder when there is one, else the config this command was given."""
    saved = Path(ckpt).resolve().parent.parent / "config.yaml"
    text, source = (saved.read_text(), str(saved)) if saved.is_file() else (to_yaml(cfg), "the export command's config")
    return hashlib.sha256(text.encode()).hexdigest(), source


def check_export(cfg: Config) -> tuple[str, Path]:
    """The checkpoint and the folder to write, refused in one line before any model loads."""
    ckpt = resolve_ckpt(cfg)
    if ckpt is None:
        raise ConfigError("ckpt_path: export needs a trained policy; pass ckpt_path=last (the run's last checkpoint) or a path")
    if not cfg.export.out:
        raise ConfigError("export.out: the folder to write; pass out=DIR")
    out = Path(cfg.export.out).expanduser()
    if out.exists():
        raise ConfigError(f"export.out: {out} exists; choose a new folder (an export never overwrites)")
    checkpoint_epoch(ckpt)  # an unreadable or foreign checkpoint: one line, before any model loads
    if not cfg.export.merge and not cfg.model.lora.enabled:
        raise ConfigError("export.merge: false writes LoRA adapters alone, but this run trained all weights "
                          "(model.lora.enabled=false); leave merge=true")
    return ckpt, out


def export(cfg: Config) -> Path:
    """Write the checkpoint's policy to `export.out`; return the folder."""
    from empo2.models import resolve
    from empo2.module import EMPO2Module

    ckpt, out = check_export(cfg)
    module = EMPO2Module.from_checkpoint(cfg, ckpt)
    assert module.policy is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    write_model_folder(module.policy, module.tokenizer, out, merge=cfg.export.merge)
    digest, source = config_hash(cfg, ckpt)
    record = {
        "checkpoint": str(Path(ckpt).resolve()), "run": cfg.name,
        "iterations_trained": checkpoint_epoch(ckpt),
        "config_sha256": digest, "config_source": source,
        "base_model": cfg.model.weights, "base_model_folder": resolve(cfg.model.weights),
        "lora": {"r": cfg.model.lora.r, "alpha": cfg.model.lora.alpha} if cfg.model.lora.enabled else None,
        "merged": cfg.export.merge or not cfg.model.lora.enabled,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return out


def parse_overrides(items: list[str]) -> list[str]:
    """`out=DIR` and `merge=BOOL` are short for `export.out=DIR` and `export.merge=BOOL`."""
    return [f"export.{item}" if item.startswith(("out=", "merge=")) else item for item in items]


COMMAND = Command(
    "empo2.export", "Export a trained policy as a Hugging Face model folder (LoRA merged, or the adapters alone).",
    example="--config conf/quickstart.yaml ckpt_path=last out=exported/quickstart",
    config_help="the YAML file(s) the run was trained with",
    overrides_help="ckpt_path=last|PATH out=DIR [merge=true|false]",
    errors=(ValueError,),
)


def main(argv: list[str] | None = None) -> int:
    def run(cfg: Config) -> int:
        out = export(cfg)
        if cfg.export.merge or not cfg.model.lora.enabled:
            print(f"exported the policy to {out} ({RECORD} says where from); evaluate it with model.name_or_path={out}")
        else:
            print(f"exported the LoRA adapters to {out} ({RECORD} says where from; adapter_config.json names the base)")
        return 0

    return run_command(COMMAND, argv, run, rewrite=parse_overrides)


if __name__ == "__main__":
    raise SystemExit(main())
