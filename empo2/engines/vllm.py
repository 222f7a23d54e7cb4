"""Rollout engine on vLLM, colocated in the trainer's process, with a weight sync that is verified.

Why colocated: each rank owns one engine next to its trainer (on GPU they share the device:
`engine.gpu_memory_utilization`, and the engine sleeps during the update when
`engine.sleep_between_phases`). With one rank the engine core runs inside this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`): nothing is spawned and nothing outlives `close()`. With
several ranks (ddp, fsdp, fsdp2) each rank's engine core runs in a child process of that rank:
vLLM sets up torch.distributed for its workers, and inside a rank's process it would find
Lightning's process group and treat the ranks as its own data-parallel replicas, which must then
step together. In a child process its world is its own; `close()` ends the child, and an
`OrphanGuard` ends it if the rank dies without closing (SIGKILL, the OOM killer). On CPU each
rank's engine binds its threads to that rank's share of the cores.

Why token ids: the chat template is applied once on our side; vLLM receives `TokensPrompt`s and
returns the sampled ids, so the trainer trains on exactly the sampled tokens. Log-probs are taken
after temperature scaling (`logprobs_mode="processed_logprobs"`), the same distribution the HF
engine reports. Prefix caching is on: the turns of an episode share their whole history.

Weight sync, before every rollout phase (`sync_weights`): with LoRA the adapter is saved and
served under a *new* integer adapter id (vLLM caches adapters by id; an old id silently serves the
old weights); with full weights a safetensors copy is written and the workers reload it
(`reload_weights`; tied input/output embeddings are tied again afterwards, which the reload
alone does not do). Then a probe: the engine scores a fixed response to a fixed prompt and its
log-probs must be within `engine.verify_tolerance` (mean absolute difference) of the trainer's own.
A stale engine raises `StaleEngineError`; the run stops rather than train on the wrong policy.

CPU specifics are set here, not by the user: worker threads bound to every core, the KV-cache size
(`engine.cpu_kv_cache_gb`), eager mode (startup ~20 s instead of ~80 s, same speed), and
`OMP_NUM_THREADS` set to torch's thread count before start-up (otherwise vLLM drops torch to one
thread for the whole process, which would slow the trainer sharing it).

Imports of `vllm` are inside functions: the package is optional, and importing this module must
work without it (the registry lists the engine either way).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from empo2 import distributed as D
from empo2 import sharding
from empo2.engines.base import ENGINES, Generation, RolloutEngine, SamplingParams
from empo2.orphan_guard import OrphanGuard, child_pids

PROBE_CHAT = [{"role": "user", "content": "You stand in a kitchen next to a closed fridge. Your next action?"}]
PROBE_RESPONSE = "open the fridge\n"


class StaleEngineError(RuntimeError):
    """The engine does not serve the trainer's current weights."""


def cpu_share(rank: int, ranks: int) -> str:
    """The cores this rank's CPU engine binds its threads to: its own slice when ranks share the machine."""
    cores = os.cpu_count() or 1
    per = max(cores // ranks, 1)
    first = (rank * per) % cores
    return f"{first}-{min(first + per, cores) - 1}"


@dataclass
class VLLMSettings:
    model_path: str
    """Folder of the base model (safetensors)."""
    dtype: str
    max_model_len: int
    max_num_seqs: int
    lora_rank: Optional[int]
    """LoRA rank when adapters are trained, None for full weights."""
    gpu_memory_utilization: float = 0.35
    tensor_parallel_size: int = 1
    sleep_between_phases: bool = True
    cpu_kv_cache_gb: float = 2.0
    verify_tolerance: float = 0.02
    seed: int = 0


def _retie_output_embedding(worker) -> None:
    """Runs on each worker after a reload. A checkpoint of a model with tied embeddings holds no
    `lm_head.weight`; vLLM's in-place reload then puts the *old* output matrix back while the input
    embedding gets the new one. Tie them again and let the layer repack its matrix."""
    model = worker.model_runner.get_model()
    head, body = getattr(model, "lm_head", None), getattr(model, "model", None)
    if head is not None and body is not None and hasattr(body, "embed_tokens"):
        head.weight = body.embed_tokens.weight
        process = getattr(getattr(head, "quant_method", None), "process_weights_after_loading", None)
        if callable(process):  # the CPU backend keeps a repacked copy of the matrix for its GEMM
            process(head)


def model_len_needed(cfg: Any) -> int:
    """Positions the longest sequence may take: a rollout prompt and its response, or (tips written by
    the policy) the longest tip prompt and its tip."""
    r, m = cfg.rollout, cfg.memory
    rollout = r.max_prompt_tokens + r.max_new_tokens
    tips = cfg.tip_prompt_tokens + m.tip_max_tokens if m.enabled and m.tip_source == "model" else 0
    return max(rollout, tips)


@ENGINES.register("vllm")
class VLLMEngine(RolloutEngine):
    def __init__(self, policy, tokenizer, settings: VLLMSettings, work_dir: Path) -> None:
        self.policy, self.tokenizer, self.settings = policy, tokenizer, settings
        self.work_dir = Path(work_dir)
        self.on_gpu = torch.cuda.is_available()
        self.guard: OrphanGuard | None = None
        """Stops the engine core's child processes should this process die without `close()`."""
        self.llm = self._start()
        self.version = 0
        self.lora_request: Any = None
        self.used_adapter_ids: set[int] = set()
        self.sync_s = 0.0
        self.probe_gap = math.nan
        self.asleep = False
        chat = tokenizer.apply_chat_template(PROBE_CHAT, add_generation_prompt=True, tokenize=False)
        self.probe_prompt = tokenizer(chat, add_special_tokens=False)["input_ids"]
        self.probe_response = tokenizer(PROBE_RESPONSE, add_special_tokens=False)["input_ids"]

    @classmethod
    def from_config(cls, cfg: Any, policy, tokenizer, work_dir: Path) -> "VLLMEngine":
        from empo2.models import resolve

        e, r = cfg.engine, cfg.rollout
        settings = VLLMSettings(
            model_path=resolve(cfg.model.weights),
            dtype=e.dtype or cfg.model.dtype,
            max_model_len=e.max_model_len or model_len_needed(cfg),
            max_num_seqs=e.max_batch_size,
            lora_rank=cfg.model.lora.r if cfg.model.lora.enabled else None,
            gpu_memory_utilization=e.gpu_memory_utilization,
            tensor_parallel_size=e.tensor_parallel_size,
            sleep_between_phases=e.sleep_between_phases,
            cpu_kv_cache_gb=e.cpu_kv_cache_gb,
            verify_tolerance=e.verify_tolerance,
            seed=cfg.seed,
        )
        return cls(policy, tokenizer, settings, work_dir)

    # ------------------------------------------------------------------ start-up
    def _start(self):
        s = self.settings
        ranks = D.world_size()
        # One rank: the engine core runs in this process. Several: in a child process of each rank,
        # whose torch.distributed world is its own (vLLM would otherwise join Lightning's process
        # group as data-parallel ranks and couple the ranks' generation loops).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if ranks > 1 else os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if ranks > 1:
            # Re-tying the embeddings after a full-weight reload sends a function of this module to the
            # engine core process; vLLM pickles it only when allowed (local IPC between our own processes).
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        if "VLLM_RPC_BASE_PATH" not in os.environ:
            # The engine core's sockets are files whose path must fit 107 bytes: not under the run
            # folder (where the trainer's temp files go), in a short folder of the system's own.
            import tempfile

            self._sockets = tempfile.mkdtemp(prefix="empo2-vllm-", dir=os.environ.get("TMPDIR") or "/tmp")
            os.environ["VLLM_RPC_BASE_PATH"] = self._sockets
        if not self.on_gpu:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_share(D.rank(), ranks))
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(s.cpu_kv_cache_gb)))))
            # vLLM lowers torch's intra-op threads to 1 for serving (and then blocks changing them)
            # unless OMP_NUM_THREADS is set: the trainer shares this process and needs its threads.
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=s.model_path, dtype=s.dtype, max_model_len=s.max_model_len, max_num_seqs=s.max_num_seqs,
            enable_prefix_caching=True, enforce_eager=not self.on_gpu, seed=s.seed,
            logprobs_mode="processed_logprobs",
        )
        if s.lora_rank is not None:
            kwargs.update(enable_lora=True, max_lora_rank=s.lora_rank, max_loras=1)
        if self.on_gpu:
            kwargs.update(gpu_memory_utilization=s.gpu_memory_utilization, tensor_parallel_size=s.tensor_parallel_size,
                          enable_sleep_mode=s.sleep_between_phases)
        before = child_pids()
        llm = LLM(**kwargs)
        spawned = child_pids() - before
        if spawned:  # the engine core (and its helpers) in child processes: stopped even if we are killed
            self.guard = OrphanGuard(spawned, [self._sockets] if getattr(self, "_sockets", None) else [])
        return llm

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        self._wake()
        from vllm import SamplingParams as VParams
        from vllm.inputs import TokensPrompt

        # One seed per request, drawn from torch's generator: runs (and resumes) are reproducible.
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        requests = [VParams(
            max_tokens=params.max_new_tokens, temperature=params.temperature, logprobs=0, seed=seed,
            stop=list(params.stop) or None, include_stop_str_in_output=True,
        ) for seed in seeds]
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], requests,
            lora_request=self.lora_request, use_tqdm=False,
        )
        gens = []
        for out in outs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            logprobs = [(d[t] if t in d else next(iter(d.values()))).logprob for d, t in zip(c.logprobs or [], ids)]
            reason = "length" if c.finish_reason == "length" else "stop" if c.stop_reason is not None else "eos"
            gens.append(Generation(ids, logprobs, self.tokenizer.decode(ids, skip_special_tokens=True), reason))
        return gens

    # ------------------------------------------------------------------ weights
    def sync_weights(self) -> None:
        t0 = time.perf_counter()
        self._wake()
        self.version += 1
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # A sharded policy hands over its gathered weights (a collective: every rank syncs together).
        model = sharding.unwrapped(self.policy)
        lora = self.settings.lora_rank is not None
        state = sharding.gathered_weights(self.policy, trainable_only=lora) if sharding.is_sharded(self.policy) else None
        if lora:
            path = self.work_dir / f"adapter-v{self.version}"
            model.save_pretrained(str(path), state_dict=state)
            self.serve_adapter(path, adapter_id=self.version)
            for old in self.work_dir.glob("adapter-v*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            # Written directly, not by `save_pretrained`: transformers writes weights on
            # torch.distributed rank 0 only, and every rank's engine needs its own copy.
            from safetensors.torch import save_file

            path = self.work_dir / "weights"
            path.mkdir(parents=True, exist_ok=True)
            weights = state if state is not None else {n: p.detach() for n, p in model.named_parameters()}
            save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "model.safetensors"))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
            if getattr(model.config, "tie_word_embeddings", False):
                self.llm.collective_rpc(_retie_output_embedding)
        self.verify()
        self.sync_s = time.perf_counter() - t0

    def serve_adapter(self, path: Path, adapter_id: int) -> None:
        """Serve the adapter saved at `path` under `adapter_id`, which must never have been used."""
        from vllm.lora.request import LoRARequest

        if adapter_id in self.used_adapter_ids:
            raise StaleEngineError(f"adapter id {adapter_id} was already served: vLLM would keep its old weights")
        self.used_adapter_ids.add(adapter_id)
        self.lora_request = LoRARequest(f"policy-v{adapter_id}", adapter_id, str(path))

    def probe_logprobs(self) -> tuple[list[float], list[float]]:
        """(engine, trainer) log-probs of the probe response at temperature 1."""
        from vllm import SamplingParams as VParams
        from vllm.inputs import TokensPrompt

        from empo2.token_batch import pack, response_logprobs

        out = self.llm.generate(
            [TokensPrompt(prompt_token_ids=self.probe_prompt + self.probe_response)],
            VParams(max_tokens=1, temperature=1.0, prompt_logprobs=0), lora_request=self.lora_request, use_tqdm=False,
        )[0]
        scored = out.prompt_logprobs[len(self.probe_prompt):]
        engine = [d[t].logprob for d, t in zip(scored, self.probe_response)]
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad():
                device = next(self.policy.parameters()).device
                batch = pack([self.probe_prompt], [self.probe_response], self.tokenizer.pad_token_id or 0).to(device)
                trainer = response_logprobs(self.policy, batch, temperature=1.0)[0].float().cpu().tolist()
        finally:
            self.policy.train(was_training)
        return engine, trainer[: len(engine)]

    def verify(self) -> float:
        """Mean |engine − trainer| on the probe; raises StaleEngineError past the tolerance."""
        engine, trainer = self.probe_logprobs()
        gap = sum(abs(a - b) for a, b in zip(engine, trainer)) / max(len(engine), 1)
        self.probe_gap = gap
        if not gap <= self.settings.verify_tolerance:
            raise StaleEngineError(
                f"after weight sync v{self.version} the engine's probe log-probs differ from the trainer's by "
                f"{gap:.4f} on average (tolerance engine.verify_tolerance={self.settings.verify_tolerance}): "
                "the engine does not serve the current weights"
            )
        return gap

    # ------------------------------------------------------------------ memory
    def release_memory(self) -> None:
        if self.on_gpu and self.settings.sleep_between_phases and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def metrics(self) -> dict[str, float]:
        return {"engine/weight_version": float(self.version), "engine/sync_probe_gap": self.probe_gap,
                "time/weight_sync_s": self.sync_s}

    def close(self) -> None:
        import gc

        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            shutdown = getattr(engine_core, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
            gc.collect()
        guard, self.guard = getattr(self, "guard", None), None
        if guard is not None:
            guard.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        sockets = getattr(self, "_sockets", None)
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)
            if os.environ.get("VLLM_RPC_BASE_PATH") == sockets:
                del os.environ["VLLM_RPC_BASE_PATH"]
