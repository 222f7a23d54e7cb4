"""Grouped-query attention under a mask without copying the cache (empo2/attention.py) computes what
transformers' `sdpa` computes: the same forward, the same sampled tokens, gradients within round-off."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2 import attention
from empo2.engines import HFEngine, SamplingParams
from empo2.models import load_causal_lm

pytestmark = pytest.mark.isa  # kernel-dependent numerics: run again under an AVX2 cap (make test-isa)


def _pair(tiny_model):
    ours = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention.register())
    theirs = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    assert ours.model.layers[0].self_attn.num_key_value_groups == 2  # the tiny model shares its key/value heads
    return ours, theirs


def _padded_batch():
    g = torch.Generator().manual_seed(0)
    lengths = [5, 19, 12, 1]
    ids = torch.zeros((len(lengths), 19), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 19 - n:] = torch.randint(10, 1000, (n,), generator=g)
        mask[i, 19 - n:] = 1
    return ids, mask


def test_models_load_with_it(tiny_model):
    assert load_causal_lm(tiny_model).config._attn_implementation == attention.NAME


def test_padded_forward_and_decode_steps_equal_sdpa(tiny_model):
    """Same kernel, same per-head sums: the logits agree to float32 round-off of the logits' scale
    (|logit| < 10 here, so 1e-5 is a few ulps), over a padded prefill and padded decode steps."""
    ours, theirs = _pair(tiny_model)
    ids, mask = _padded_batch()
    with torch.no_grad():
        outs = [m(input_ids=ids, attention_mask=mask, use_cache=True) for m in (ours, theirs)]
        torch.testing.assert_close(outs[0].logits, outs[1].logits, rtol=0, atol=1e-5)
        nxt = torch.tensor([[7], [8], [9], [10]])
        step_mask = torch.cat([mask, torch.ones((4, 1), dtype=torch.long)], dim=1)
        steps = [m(input_ids=nxt, attention_mask=step_mask, past_key_values=o.past_key_values, use_cache=True)
                 for m, o in zip((ours, theirs), outs)]
    torch.testing.assert_close(steps[0].logits, steps[1].logits, rtol=0, atol=1e-5)


def test_gradients_equal_sdpa_within_round_off(tiny_model):
    """The key/value gradients sum the query heads of a group in another order: equal up to float32
    round-off relative to the gradient's size."""
    ours, theirs = _pair(tiny_model)
    ids, mask = _padded_batch()
    grads = []
    for m in (ours, theirs):
        m.train()
        loss = m(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        scale = float(grads[1][name].abs().max())
        torch.testing.assert_close(g, grads[1][name], rtol=0, atol=1e-5 * max(scale, 1e-3), msg=name)


def test_generation_identical_to_sdpa(tiny_model, tokenizer):
    """Left-padded prompts, sampled under one seed: the same tokens and log-probs."""
    texts = ["You are in the hallway.", "Go.", "A much longer observation about a kitchen with many things in it."]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=True,
                                             add_generation_prompt=True)["input_ids"] for t in texts]
    gens = []
    for model in _pair(tiny_model):
        torch.manual_seed(0)
        gens.append(HFEngine(model, tokenizer).generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, stop=[])))
    for a, b in zip(*gens):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
