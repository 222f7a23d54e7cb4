"""Would `torch.compile` make the engine's decode steps cheaper on this CPU? Measured in one run.

Why this exists: after the engine work of issue 41 a rollout decode step costs what a plain eager
forward of one token per row costs (BENCHMARKS.md, "decode step vs floor" 0.9-1.1×), so the next
gain would have to come from below that floor: fused elementwise kernels and less Python per layer,
which is what inductor's CPU backend generates. This measures that ceiling on the easiest case for
a compiler (a static cache, fixed batch, no rows leaving, no recompiles): the same model, the same
prompt cache, decode steps timed eager, compiled, then eager again, medians after two warm steps,
and the compiled step's tokens checked against eager ones under greedy decoding. The engine's own
steps are harder for a compiler (rows leave the batch, the cache grows), so the ratio printed here
is an upper bound on what compiling the engine could give. The floor the engine is held to (an
eager step on a cache that holds only what rows use, `rollout_anatomy.plain_decode_step`) is timed in
the same run, since an eager static-cache step can cost more than it.

    .venv/bin/python bench/compiled_decode.py [--rows 25] [--cache 282] [--steps 12]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, StaticCache

from empo2.models import resolve
from rollout_anatomy import plain_decode_step  # bench/ is on the path when a bench script runs


def decode_steps(model, forward, prompt: torch.Tensor, steps: int) -> tuple[list[float], list[list[int]]]:
    """Prefill `prompt` into a fresh static cache, then `steps` greedy decode steps through
    `forward`: (seconds per step, tokens per row)."""
    rows, length = prompt.shape
    cache = StaticCache(config=model.config, max_batch_size=rows, max_cache_len=length + steps + 1,
                        device="cpu", dtype=torch.float32)
    seconds, tokens = [], []
    with torch.inference_mode():
        out = model(input_ids=prompt, past_key_values=cache, cache_position=torch.arange(length), use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        for i in range(steps):
            start = time.perf_counter()
            out = forward(input_ids=token, past_key_values=cache, cache_position=torch.tensor([length + i]),
                          use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            seconds.append(time.perf_counter() - start)
            tokens.append(token[:, 0].tolist())
    return seconds, [list(t) for t in zip(*tokens)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=25, help="decode batch (KeyRoom protocol: ~25 rows)")
    parser.add_argument("--cache", type=int, default=282, help="prompt tokens per row in the cache")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve(args.model), dtype=torch.float32).eval()
    prompt = torch.randint(0, model.config.vocab_size, (args.rows, args.cache))
    compiled = torch.compile(model.forward, dynamic=False)
    results = {}
    for label, forward in [("eager", model.forward), ("compiled", compiled), ("eager again", model.forward)]:
        start = time.perf_counter()
        seconds, tokens = decode_steps(model, forward, prompt, args.steps)
        results[label] = (statistics.median(seconds[2:]), tokens)
        print(f"{label:12s} median step {1000 * results[label][0]:7.1f} ms  (whole run incl. compile "
              f"{time.perf_counter() - start:6.1f} s)", flush=True)
    eager = (results["eager"][0] + results["eager again"][0]) / 2
    floor = plain_decode_step(model, contextlib.nullcontext, args.rows, args.cache, steps=args.steps)
    same = sum(a == b for a, b in zip(results["eager"][1], results["compiled"][1]))
    print(f"rows {args.rows}, cache {args.cache}, threads {torch.get_num_threads()}: compiled / eager step "
          f"= {results['compiled'][0] / eager:.2f}; compiled / the engine's floor ({1000 * floor:.1f} ms) = "
          f"{results['compiled'][0] / floor:.2f}; greedy tokens identical in {same} of {args.rows} rows")


if __name__ == "__main__":
    main()
