"""The HF engine's prefix cache: a continued call returns what a trainer forward pass over the whole
prompt gives (the engine contract), whatever part of the prompt came from the cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2.engines import HFEngine, SamplingParams
from empo2.engines.prefix_cache import common_prefix_length, shared_prefix_lengths, weights_version
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
    # nothing was cached before the first call, but its two identical prompts were encoded once and
    # the third continued from the opening all three share
    opening = common_prefix_length(first)
    assert opening >= 8
    reused = 2 * (len(first[0]) - 1) + opening
    assert engine.metrics()["engine/prompt_tokens_reused"] == pytest.approx(reused / sum(len(p) for p in first))
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


def test_an_ended_episode_is_continued_later_as_from_a_fresh_encoding(tiny_model, tokenizer):
    """Episode 0 ends after the first call and is absent from the second; the third call (its tip
    request) continues from its kept row: every token of its last prompt and response but the last
    comes from the cache, and greedy tokens and log-probs equal those of a fresh, uncached engine."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = HFEngine(model, tokenizer, max_batch_size=8)
    first = [_chat(tokenizer, "You are in the hallway."), _chat(tokenizer, "A kitchen with a fridge and a table.")]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, stop=[])
    torch.manual_seed(0)
    gens = engine.generate(first, params)
    obs = tokenizer(" You see a door.", add_special_tokens=False)["input_ids"]
    second = [first[1] + gens[1].token_ids + obs]
    gens2 = engine.generate(second, params)
    assert engine._cache.lengths.numel() == 2  # episode 0's row kept beside the new one
    request = tokenizer(" Write a tip.", add_special_tokens=False)["input_ids"]
    tips = [first[0] + gens[0].token_ids + request, second[0] + gens2[0].token_ids + request]
    engine.metrics()
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0, stop=[])
    cached = engine.generate(tips, greedy)
    reused = engine.metrics()["engine/prompt_tokens_reused"] * sum(len(t) for t in tips)
    assert reused == pytest.approx(len(first[0]) + len(gens[0].token_ids) - 1 + len(second[0]) + len(gens2[0].token_ids) - 1)
    fresh = HFEngine(model, tokenizer, prefix_cache=False).generate(tips, greedy)
    for a, b in zip(cached, fresh):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    _assert_contract(engine, tips, cached, 1.0)


def test_kept_rows_stay_within_the_batch_limit(tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = HFEngine(model, tokenizer, max_batch_size=3)
    params = SamplingParams(max_new_tokens=3, temperature=1.0, stop=[])
    torch.manual_seed(0)
    for k in range(4):  # each call a new episode that shares only the template's opening
        engine.generate([_chat(tokenizer, f"Room number {k} of the house.")], params)
    assert engine._cache.lengths.numel() == 3
    assert engine._cache.width == int(engine._cache.lengths.max())  # no column is padding of every row


def test_common_prefix_length_by_hand():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 3
    assert common_prefix_length([[5], [1, 2]]) == 0


def test_shared_prompts_encoded_once_generate_as_encoded_apart(tiny_model, tokenizer):
    """A group's identical first prompts and the opening of all: encoded once, forked; greedy tokens
    and log-probs equal an uncached engine's, and every prompt but the opening's last token comes
    from the shared rows."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    a, b, c = (_chat(tokenizer, t) for t in ("You are in the hallway.", "A kitchen with a fridge.", "Go north."))
    prompts = [a, a, a, b, c, b]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0, stop=[])
    engine = HFEngine(model, tokenizer, max_batch_size=8)
    shared = engine.generate(prompts, greedy)
    reused = 3 * (len(a) - 1) + 2 * (len(b) - 1) + common_prefix_length([a, b, c])
    assert engine.metrics()["engine/prompt_tokens_reused"] == pytest.approx(reused / sum(len(p) for p in prompts))
    apart = HFEngine(model, tokenizer, prefix_cache=False).generate(prompts, greedy)
    for x, y in zip(shared, apart):
        assert x.token_ids == y.token_ids
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    torch.manual_seed(0)
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=1.0, stop=[]))
    _assert_contract(engine, prompts, sampled, 1.0)


def test_a_long_new_prompt_among_continued_ones_generates_as_encoded_apart(tiny_model, tokenizer):
    """A prompt the cache barely holds, beside prompts it holds almost whole, is encoded in a
    forward of its own first; greedy tokens equal an uncached engine's."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = HFEngine(model, tokenizer, max_batch_size=8)
    first = [_chat(tokenizer, "You are in the hallway."), _chat(tokenizer, "You are in the garden.")]
    gens = engine.generate(first, SamplingParams(max_new_tokens=4, temperature=0.0, stop=[]))
    obs = tokenizer(" ok.", add_special_tokens=False)["input_ids"]
    long = _chat(tokenizer, " ".join(f"Room {k} has a box, a lamp and a door." for k in range(12)))
    prompts = [first[0] + gens[0].token_ids + obs, long, first[1] + gens[1].token_ids + obs]
    engine.metrics()
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0, stop=[])
    cached = engine.generate(prompts, greedy)
    assert engine._cache.lengths.numel() == 3
    fresh = HFEngine(model, tokenizer, prefix_cache=False).generate(prompts, greedy)
    for x, y in zip(cached, fresh):
        assert x.token_ids == y.token_ids
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    assert len(long) - common_prefix_length([long, first[0]]) > 64  # the case the early forward is for
