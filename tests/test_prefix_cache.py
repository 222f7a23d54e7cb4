"""The HF engine's prefix cache: a continued call returns what a trainer forward pass over the whole
prompt gives (the engine contract), whatever part of the prompt came from the cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2.engines import HFEngine, SamplingParams
from empo2.engines.prefix_cache import shared_prefix_lengths, weights_version
from empo2.token_batch import pack, response_logprobs

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)


def _chat(tokenizer, text):
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                         add_generation_prompt=True)["input_ids"]


def _assert_contract(engine, prompts, gens, temperature):
    batch = pack(prompts, [g.token_ids for g in gens], engine.pad_id)
    with torch.no_grad():
        trainer_lp = response_logprobs(engine.model, batch, temperature=temperature)
    for i, g in enumerate(gens):
        assert trainer_lp[i, : len(g.logprobs)].tolist() == pytest.approx(g.logprobs, abs=1e-4)


def test_shared_prefix_lengths_by_hand():
    rows = torch.tensor([[5, 6, 7, -1], [5, 6, 9, 9], [1, 2, 3, 4]])
    lengths = torch.tensor([3, 4, 4])
    assert shared_prefix_lengths(torch.tensor([5, 6, 7, 8, 9]), rows, lengths).tolist() == [3, 2, 0]
    assert shared_prefix_lengths(torch.tensor([5, 6]), rows, lengths).tolist() == [2, 2, 0]
    # a row's padding never counts, even where it equals the prompt's token
    assert shared_prefix_lengths(torch.tensor([5, 6, 7, -1]), rows, lengths).tolist() == [3, 2, 0]
    assert shared_prefix_lengths(torch.tensor([], dtype=torch.long), rows, lengths).tolist() == [0, 0, 0]


@pytest.mark.parametrize("lora", [False, True])
def test_turns_continued_from_the_cache_score_as_a_full_forward(tiny_model, tokenizer, lora):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    if lora:  # the policy as the trainer builds it: peft wraps generate and forward
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)  # a trained adapter: the cached keys and values depend on it
    engine = HFEngine(model, tokenizer, max_batch_size=8)
    first = [_chat(tokenizer, "You are in the hallway."), _chat(tokenizer, "You are in the hallway."),
             _chat(tokenizer, "A kitchen with a fridge, a table and a long list of things on it.")]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, stop=[])
    torch.manual_seed(0)
    gens = engine.generate(first, params)
    _assert_contract(engine, first, gens, 1.0)
    assert engine.metrics()["engine/prompt_tokens_reused"] == 0.0  # nothing cached before the first call
    obs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("ok.", "You see a door to the north.", "no")]
    second = [
        first[0] + gens[0].token_ids + obs[0],  # the next turn: the whole cached row, then new tokens
        first[1] + gens[1].token_ids[:2] + obs[1],  # branches inside the cached response: the rest is masked
        first[2] + gens[2].token_ids + obs[2],
        _chat(tokenizer, "Something else entirely, never seen."),  # shares only the template's opening
    ]
    gens2 = engine.generate(second, params)
    _assert_contract(engine, second, gens2, 1.0)
    reused = sum(len(first[i]) + len(gens[i].token_ids) for i in (0, 2)) + len(first[1]) + 2
    assert engine.metrics()["engine/prompt_tokens_reused"] >= reused / sum(len(p) for p in second)
    third = [second[i] + gens2[i].token_ids + obs[i % 3] for i in range(4)]
    gens3 = engine.generate(third[::-1], SamplingParams(max_new_tokens=4, temperature=0.7, stop=[]))
    _assert_contract(engine, third[::-1], gens3, 0.7)


def test_a_weight_update_drops_the_cache(tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = HFEngine(model, tokenizer)
    prompt = _chat(tokenizer, "You are in the hallway.")
    params = SamplingParams(max_new_tokens=5, temperature=1.0, stop=[])
    gen = engine.generate([prompt], params)[0]
    version = weights_version(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.lm_head.weight.sum().backward()
    opt.step()  # in place, as the trainer's update
    assert weights_version(model) != version
    engine.metrics()
    nxt = prompt + gen.token_ids + prompt
    gen2 = engine.generate([nxt], params)[0]
    assert engine.metrics()["engine/prompt_tokens_reused"] == 0.0
    _assert_contract(engine, [nxt], [gen2], 1.0)


def test_off_encodes_every_prompt_whole(tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = HFEngine(model, tokenizer, prefix_cache=False)
    prompt = _chat(tokenizer, "You are in the hallway.")
    params = SamplingParams(max_new_tokens=5, temperature=1.0, stop=[])
    gen = engine.generate([prompt], params)[0]
    engine.generate([prompt + gen.token_ids + prompt], params)
    assert engine.metrics()["engine/prompt_tokens_reused"] == 0.0
