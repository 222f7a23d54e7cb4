"""Peak memory: real runs before/after token-budget micro-batches, and peak memory vs token budget.

Part 1 runs `empo2.fit` on real configs in child processes, three times each in one run of this
script: "rows, fp32" cuts micro-batches by `optim.micro_batch_size` rows only (what the trainer did
before the token budget existed: an unbounded `optim.max_tokens_per_micro_batch`) and computes in
float32 without activation checkpointing; "tokens, fp32" adds the token budget; "shipped" is the
config as it ships (token budget, bf16 compute, activation checkpointing). For each it prints the
whole process's peak RSS (from the kernel's accounting of the child), the per-phase peaks the run
logged (`memory/*_peak_rss_mb`) and the update / old-log-prob time summed over iterations.

Part 2 isolates the update: the embedded model (LoRA, fp32) runs forward+backward over 16 rows in
micro-batches of a given token budget, once with short prompts and once with long ones, each in a
fresh process. Peak memory must follow the budget, not the prompt length.

Part 3 says where the memory goes: every tensor autograd saves for backward during one forward of
1,000 tokens (the weights themselves excluded), by shape, per token. A padded attention score
matrix would appear as a [.., 1000, 1000] entry; sdpa on CPU saves none.

Part 4 asks where the rest of the process peak goes: one row of 1,036 tokens (the quickstart's
budget), forward+backward three times after a warm-up, in fresh processes that differ only in
glibc's malloc settings (`GLIBC_TUNABLES`): the default (a dynamic mmap threshold), a fixed mmap
threshold of 4 MB or 1 MB (blocks at least that large come from and go back to the kernel), and
1 MB with transparent huge pages for those blocks. Peak above the warmed-up process, and seconds
per forward+backward (the ratio to the default is the price of each setting).

Part 5 is the lever the CPU configs use: the same row and passes, in fresh processes, in float32 or
under bf16 autocast, each with and without activation checkpointing (`model.gradient_checkpointing`,
which keeps only each layer's input and recomputes the layer in backward).

Part 6 (`--part cuda`, needs a CUDA GPU; not in `all`) repeats part 5 on the GPU for a row of 1,036
tokens (the CPU configs' budget) and one of 4,532 (the paper's), with the embedded model's
architecture at random weights: CUDA peak above the loaded weights and milliseconds per
forward+backward. Under the padding mask in float32, sdpa on CUDA falls back to a kernel that keeps
each layer's [heads, T, T] scores, which the longer row shows.

    python bench/peak_memory.py [--part runs|budget|saved|allocator|precision|cuda|all] [--iterations 2] [--runs "quickstart" ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNS = {
    # every iteration in a memory mode (tips retrieved and written), 2 instances, 2 rollouts each
    "quickstart p=1": ["--config", "conf/quickstart.yaml", "mode.p=1", "env.options.num_train=2",
                       "rollout.tasks_per_iteration=2", "rollout.group_size=2", "memory.tip_max_tokens=16"],
    "quickstart": ["--config", "conf/quickstart.yaml"],
    "sciworld_cpu": ["--config", "conf/sciworld_cpu.yaml", "eval.val_every=0"],
    "webshop_cpu": ["--config", "conf/webshop_cpu.yaml", "eval.val_every=0"],
}
FP32 = ["trainer.precision=32-true", "model.gradient_checkpointing=false"]
SETTINGS = {"rows, fp32": ["optim.max_tokens_per_micro_batch=1000000", *FP32], "tokens, fp32": FP32, "shipped": []}


def run_fit(args: list[str], out_dir: Path, name: str, iterations: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "empo2.fit", *args, f"out_dir={out_dir}", f"name={name}",
           f"trainer.max_epochs={iterations}", "logging.progress_bar=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    with (out_dir / name / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    out = {"process_peak_rss_mb": usage.ru_maxrss / 1024}
    for key in ("time/update_s", "time/old_logprob_s"):
        out[key] = sum(float(r[key]) for r in rows)
    for key in rows[0]:
        if key.startswith("memory/"):
            out[key] = max(float(r[key]) for r in rows if r.get(key))
    return out


def part_runs(iterations: int, only: list[str] | None = None) -> None:
    print(f"## real runs, {iterations} iterations each (peak MB; seconds summed over iterations)")
    print("| run | micro-batches | process peak RSS | rollout | tips | old log-probs | update | update s | old log-prob s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for run, args in RUNS.items():
            if only and run not in only:
                continue
            for setting, extra in SETTINGS.items():
                slug = "".join(c if c.isalnum() else "_" for c in f"{run}-{setting}")
                m = run_fit(args + extra, Path(tmp), slug, iterations)
                phases = " | ".join(f"{m.get(f'memory/{p}_peak_rss_mb', float('nan')):.0f}"
                                    for p in ("rollout", "tips", "old_logprob", "update"))
                print(f"| {run} | {setting} | {m['process_peak_rss_mb']:.0f} | {phases} | "
                      f"{m['time/update_s']:.1f} | {m['time/old_logprob_s']:.1f} |", flush=True)


BUDGET_CHILD = r"""
import resource, sys, time, torch
from empo2.config import load_config
from empo2.models import build_policy
from empo2.token_batch import build_batch, micro_batches, response_logprobs
budget, low, high = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = build_policy(load_config(None, []).model, 0).train()
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
g = torch.Generator().manual_seed(0)
lengths = torch.randint(low, high, (16,), generator=g).tolist()
prompts = [torch.randint(3, 40000, (n,), generator=g).tolist() for n in lengths]
responses = [torch.randint(3, 40000, (12,), generator=g).tolist() for _ in lengths]
t0 = time.perf_counter()
tokens = 0
for idx in micro_batches(lengths, [12] * 16, 16, budget):
    batch = build_batch("padded", [prompts[i] for i in idx], [responses[i] for i in idx], 0)
    response_logprobs(model, batch).sum().backward()
    tokens += batch.real_tokens
secs = time.perf_counter() - t0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - loaded, tokens / secs)
"""


def part_budget() -> None:
    print("## update peak vs token budget (embedded 135M, LoRA, fp32; 16 rows; MB above the loaded model)")
    print("| budget (tokens) | prompts 100-300 tokens | prompts 700-1000 tokens | tokens/s (long prompts) |")
    print("|---|---|---|---|")
    for budget in (1024, 2048, 4096):
        cells = []
        for low, high in ((100, 300), (700, 1000)):
            out = subprocess.run([sys.executable, "-c", BUDGET_CHILD, str(budget), str(low), str(high)], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
            cells.append((float(out[-2]), float(out[-1])))
        print(f"| {budget} | {cells[0][0]:.0f} | {cells[1][0]:.0f} | {cells[1][1]:.0f} |", flush=True)


SAVED_CHILD = r"""
import collections, torch
from empo2.config import load_config
from empo2.models import build_policy
from empo2.token_batch import build_batch, response_logprobs
model = build_policy(load_config(None, []).model, 0).train()
weights = {p.data_ptr() for p in model.parameters()}
prompt_len, response_len = 1000, 12
batch = build_batch("padded", [list(range(5, 5 + prompt_len))], [[7] * response_len], 0)
seen, by_shape = set(), collections.Counter()
def keep(t):
    ptr = t.untyped_storage().data_ptr()
    if ptr not in seen and ptr not in weights and t.dim() >= 2:
        seen.add(ptr)
        by_shape[tuple(t.shape[-2:]) if t.shape[-2] != prompt_len + response_len else ("T", t.shape[-1])] += t.untyped_storage().nbytes()
    return t
with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
    response_logprobs(model, batch)
tokens = prompt_len + response_len
for shape, size in by_shape.most_common(8):
    print(shape, size / tokens / 1024)
print("total", sum(by_shape.values()) / tokens / 1024)
"""


def part_saved() -> None:
    print("## tensors saved for backward, KB per token (embedded 135M, LoRA, fp32, one row of 1,012 tokens)")
    out = subprocess.run([sys.executable, "-c", SAVED_CHILD], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    print("| saved tensor (last two dims; T = the sequence) | KB per token |")
    print("|---|---|")
    for line in out.strip().splitlines():
        shape, size = line.rsplit(" ", 1)
        print(f"| {shape} | {float(size):.1f} |")


ALLOCATOR_CHILD = r"""
import time, torch
from empo2.config import load_config
from empo2.models import build_policy
from empo2.peak_memory import PeakMemory
from empo2.token_batch import build_batch, response_logprobs
model = build_policy(load_config(None, []).model, 0).train()
batch = build_batch("padded", [list(range(5, 5 + 1024))], [[7] * 12], 0)
response_logprobs(model, batch).sum().backward()  # warm-up: lazy initialisations, first-use buffers
peak = PeakMemory()
peak.reset()  # malloc_trim, then the kernel's high-water mark restarts from the current RSS
base = peak.rss_mb()  # right after a reset: the current RSS
t0 = time.perf_counter()
for _ in range(3):
    response_logprobs(model, batch).sum().backward()
print(peak.rss_mb() - base, (time.perf_counter() - t0) / 3)
"""
PRECISION_CHILD = r"""
import contextlib, sys, time, torch
from empo2.config import load_config
from empo2.models import build_policy
from empo2.peak_memory import PeakMemory
from empo2.token_batch import build_batch, response_logprobs
bf16, recompute = sys.argv[1] == "bf16", sys.argv[2] == "true"
model = build_policy(load_config(None, [f"model.gradient_checkpointing={sys.argv[2]}"]).model, 0).train()
batch = build_batch("padded", [list(range(5, 5 + 1024))], [[7] * 12], 0)
compute = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
def step():
    with compute():
        logp = response_logprobs(model, batch)
    logp.sum().backward()
step()  # warm-up
peak = PeakMemory()
peak.reset()
base = peak.rss_mb()
t0 = time.perf_counter()
for _ in range(3):
    step()
print(peak.rss_mb() - base, (time.perf_counter() - t0) / 3)
"""


def part_precision() -> None:
    print("## one row of 1,036 tokens, forward+backward, by compute dtype and activation checkpointing")
    print("| compute | activation checkpointing | peak above base (MB) | s per forward+backward | time ratio |")
    print("|---|---|---|---|---|")
    first = None
    for dtype in ("fp32", "bf16"):
        for recompute in ("false", "true"):
            out = subprocess.run([sys.executable, "-c", PRECISION_CHILD, dtype, recompute], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
            mb, secs = float(out[-2]), float(out[-1])
            first = first or secs
            print(f"| {dtype} | {recompute} | {mb:.0f} | {secs:.2f} | {secs / first:.2f} |", flush=True)


CUDA_CHILD = r"""
import contextlib, tempfile, time, torch
from transformers import AutoConfig, AutoModelForCausalLM
from empo2.config import load_config
from empo2.models import build_policy, embedded_dir, load_tokenizer
from empo2.token_batch import build_batch, response_logprobs
source, folder = embedded_dir("smollm2-135m-instruct"), tempfile.mkdtemp()
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(folder)
load_tokenizer(str(source)).save_pretrained(folder)
for tokens in (1036, 4532):
    for bf16 in (False, True):
        for recompute in (False, True):
            cfg = load_config(None, [f"model.name_or_path={folder}", f"model.gradient_checkpointing={recompute}"])
            model = build_policy(cfg.model, 0).cuda().train()
            batch = build_batch("padded", [list(range(5, 5 + tokens - 12))], [[7] * 12], 0).to("cuda")
            compute = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
            def step():
                with compute():
                    logp = response_logprobs(model, batch)
                logp.sum().backward()
            step()
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            mb = (torch.cuda.max_memory_allocated() - base) / 2**20
            print("ROW", tokens, "bf16" if bf16 else "fp32", str(recompute).lower(), mb, (time.perf_counter() - t0) / 5 * 1000)
            del model, batch
            torch.cuda.empty_cache()
"""


def part_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        print("## cuda: skipped (no CUDA GPU here)")
        return
    print(f"## one row, forward+backward on {torch.cuda.get_device_name()} (embedded architecture, random weights, LoRA)")
    print("| row tokens | compute | activation checkpointing | CUDA peak above weights (MB) | MB per token | ms per forward+backward |")
    print("|---|---|---|---|---|---|")
    out = subprocess.run([sys.executable, "-c", CUDA_CHILD], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("ROW "):
            _, tokens, dtype, recompute, mb, ms = line.split()
            print(f"| {tokens} | {dtype} | {recompute} | {float(mb):.0f} | {float(mb) / int(tokens):.3f} | {float(ms):.1f} |")


ALLOCATORS = {
    "glibc default (dynamic mmap threshold)": "",
    "mmap threshold 4 MB": "glibc.malloc.mmap_threshold=4194304",
    "mmap threshold 1 MB": "glibc.malloc.mmap_threshold=1048576",
    "mmap threshold 1 MB + huge pages": "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=1048576",
}


def part_allocator() -> None:
    print("## one row of 1,036 tokens, forward+backward, by malloc setting (MB above the warmed-up process)")
    print("| malloc setting (GLIBC_TUNABLES) | peak above base | s per forward+backward | time ratio |")
    print("|---|---|---|---|")
    first = None
    for name, tunables in ALLOCATORS.items():
        env = {**os.environ, "GLIBC_TUNABLES": tunables} if tunables else dict(os.environ)
        out = subprocess.run([sys.executable, "-c", ALLOCATOR_CHILD], cwd=ROOT, capture_output=True, text=True,
                             check=True, env=env).stdout.split()
        mb, secs = float(out[-2]), float(out[-1])
        first = first or secs
        print(f"| {name} | {mb:.0f} | {secs:.2f} | {secs / first:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("runs", "budget", "saved", "allocator", "precision", "cuda", "all"),
                        default="all")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--runs", nargs="*", choices=list(RUNS), help="only these real runs (default: all)")
    args = parser.parse_args()
    if args.part in ("runs", "all"):
        part_runs(args.iterations, args.runs)
    if args.part in ("budget", "all"):
        part_budget()
    if args.part in ("saved", "all"):
        part_saved()
    if args.part in ("allocator", "all"):
        part_allocator()
    if args.part in ("precision", "all"):
        part_precision()
    if args.part == "cuda":
        part_cuda()


if __name__ == "__main__":
    main()
