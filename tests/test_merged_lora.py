"""Generation from a copy with the LoRA adapters folded in (`engine.merge_lora`): the same tokens and
log-probs as the unmerged policy, never stale after an update, and the policy itself untouched.

Tolerance: folding changes only float32 round-off in the adapted layers (each output element is a
sum of the same products in another order), ~1e-7 relative per layer; over this tiny model's few
layers a log-prob moves by well under 1e-5, the bound the issue asks for. Sampled tokens are drawn
from the same generator state, so they can differ only if a uniform draw falls within that round-off
of a boundary of the cumulative distribution (probability of order 1e-6 per step here)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from empo2.engines import HFEngine, SamplingParams
from empo2.engines.merged_lora import mergeable
from empo2.token_batch import pack, response_logprobs

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)


def _policy(tiny_model, **lora):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], **lora))
    _train_adapters(policy, seed=0)
    return policy


def _train_adapters(policy, seed: int) -> None:
    """Stand-in for an optimizer step: every adapter weight written in place (B starts at zero, which
    would make folding trivially exact)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)


def _prompts(tokenizer):
    texts = ["You are in the hallway.", "Open the door to the kitchen.", "A long corridor with three doors and a lamp."]
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=True,
                                          add_generation_prompt=True)["input_ids"] for t in texts]


def _sample(engine, prompts, temperature, seed):
    torch.manual_seed(seed)
    return engine.generate(prompts, SamplingParams(max_new_tokens=10, temperature=temperature, stop=[]))


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_folded_generation_equals_the_unmerged_policy(tiny_model, tokenizer, temperature):
    policy = _policy(tiny_model)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    merged = HFEngine(policy, tokenizer, merge_lora=True, prefix_cache=False)
    plain = HFEngine(policy, tokenizer, merge_lora=False, prefix_cache=False)
    assert merged.serving is not policy and plain.serving is policy
    prompts = _prompts(tokenizer)
    for seed in range(3):
        a, b = _sample(merged, prompts, temperature, seed), _sample(plain, prompts, temperature, seed)
        assert [g.token_ids for g in a] == [g.token_ids for g in b]
        for ga, gb in zip(a, b):
            assert ga.logprobs == pytest.approx(gb.logprobs, abs=1e-5)
    # the adapters matter here (folding them in is not a no-op), and the policy was never merged
    base = HFEngine(policy.get_base_model(), tokenizer, prefix_cache=False)
    with policy.disable_adapter():
        without_adapters = _sample(base, prompts, 1.0, 0)
    assert any(g.logprobs != pytest.approx(h.logprobs, abs=1e-3) for g, h in zip(without_adapters, _sample(plain, prompts, 1.0, 0)))
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())


def test_the_copy_follows_every_update_and_the_trainer_scores_what_it_samples(tiny_model, tokenizer):
    policy = _policy(tiny_model)
    engine = HFEngine(policy, tokenizer, merge_lora=True)  # with the prefix cache, as in training
    prompts = _prompts(tokenizer)
    for step in range(3):
        gens = _sample(engine, prompts, 1.0, step)
        batch = pack(prompts, [g.token_ids for g in gens], tokenizer.pad_token_id)
        with torch.no_grad():
            trainer = response_logprobs(policy, batch, temperature=1.0)  # unmerged, as the update scores
        for i, g in enumerate(gens):
            assert trainer[i, : len(g.logprobs)].tolist() == pytest.approx(g.logprobs, abs=1e-5)
        _train_adapters(policy, seed=step + 1)  # no sync call: the engine must notice by itself


@pytest.mark.parametrize("case", ["bf16 autocast", "bf16 weights", "no adapters", "dora", "modules_to_save"])
def test_folding_is_declined_where_it_would_not_be_exact(tiny_model, case):
    compute = torch.bfloat16 if case == "bf16 autocast" else None
    if case == "no adapters":
        policy = AutoModelForCausalLM.from_pretrained(tiny_model)
    elif case == "dora":
        policy = _policy(tiny_model, use_dora=True)
    elif case == "modules_to_save":
        policy = _policy(tiny_model, modules_to_save=["lm_head"])
    else:
        policy = _policy(tiny_model)
        if case == "bf16 weights":
            policy = policy.to(torch.bfloat16)
    assert not mergeable(policy, compute)
    assert mergeable(_policy(tiny_model), None)
