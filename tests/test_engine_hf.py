"""The rollout-engine contract, on the HF engine (the vLLM engine must pass the same checks)."""

import tempfile

import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2.engines import HFEngine, SamplingParams
from empo2.models import build_tiny
from empo2.token_batch import pack, response_logprobs

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)


@pytest.fixture(scope="module")
def engine(tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    return HFEngine(model, tokenizer, max_batch_size=3)


def _prompts(tokenizer):
    texts = ["You are in the hallway.", "Go.", "A much longer observation about a kitchen with many things in it."]
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=True,
                                          add_generation_prompt=True)["input_ids"] for t in texts]


def test_shapes_and_lengths(engine, tokenizer):
    torch.manual_seed(0)
    prompts = _prompts(tokenizer) * 2  # 6 prompts > max_batch_size: chunked
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=7, temperature=1.0, stop=[]))
    assert len(gens) == 6
    for g in gens:
        assert 1 <= len(g.token_ids) <= 7 and len(g.logprobs) == len(g.token_ids)
        assert all(lp <= 0 and lp > -100 for lp in g.logprobs)
        assert g.finish_reason in ("eos", "length")
        if g.finish_reason == "length":
            assert len(g.token_ids) == 7


def test_logprobs_match_a_trainer_forward_pass(engine, tokenizer):
    torch.manual_seed(1)
    prompts = _prompts(tokenizer)
    for temp in (1.0, 0.7):
        gens = engine.generate(prompts, SamplingParams(max_new_tokens=6, temperature=temp, stop=[]))
        batch = pack(prompts, [g.token_ids for g in gens], tokenizer.pad_token_id)
        with torch.no_grad():
            trainer_lp = response_logprobs(engine.model, batch, temperature=temp)
        for i, g in enumerate(gens):
            assert trainer_lp[i, : len(g.logprobs)].tolist() == pytest.approx(g.logprobs, abs=1e-4)


def test_greedy_is_deterministic(engine, tokenizer):
    prompts = _prompts(tokenizer)
    a = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=0.0, stop=[]))
    b = engine.generate(prompts[::-1], SamplingParams(max_new_tokens=5, temperature=0.0, stop=[]))
    assert [g.token_ids for g in a] == [g.token_ids for g in b[::-1]]


def test_stop_string_ends_the_response_after_the_matching_token(tokenizer):
    # A model whose output is forced: a bias on the lm_head makes "\n" then "x" the likely tokens.
    with tempfile.TemporaryDirectory() as d:
        build_tiny("embedded:smollm2-135m-instruct", d)
        model = AutoModelForCausalLM.from_pretrained(d)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    word = tokenizer("go", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.model.embed_tokens.weight.zero_()  # tied: logits become the bias alone
    bias = torch.full((model.config.vocab_size,), -30.0)
    bias[word], bias[newline] = 0.0, -1.0
    model.lm_head.bias = torch.nn.Parameter(bias)
    eng = HFEngine(model, tokenizer)
    gens = eng.generate(_prompts(tokenizer), SamplingParams(max_new_tokens=30, temperature=1.0, stop=["\n"]))
    for g in gens:
        assert g.finish_reason in ("stop", "length")
        if g.finish_reason == "stop":
            assert g.token_ids[-1] == newline and newline not in g.token_ids[:-1]
            assert all(t == word for t in g.token_ids[:-1])
    assert any(g.finish_reason == "stop" for g in gens)


def test_single_character_stops_become_end_ids(engine, tokenizer):
    ids = engine.stop_token_ids(["\n"])
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    assert newline in ids and all("\n" in tokenizer.decode([i]) for i in ids)
    assert len(ids) > 1  # tokens such as ".\n" or "\n\n" end an action too
    assert not any("\n" in tokenizer.decode([i]) for i in set(range(0, 2000)) - ids)
    assert engine.stop_token_ids(["</action>"]) is None  # may span tokens: the general check is used


def test_auto_engine_choice(monkeypatch):
    import importlib.util

    from empo2.engines import resolve_kind

    assert resolve_kind("hf") == "hf" and resolve_kind("vllm", lora=True, gpu=False) == "vllm"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert resolve_kind("auto", lora=False, gpu=True) == "hf"  # not installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    assert resolve_kind("auto", lora=False, gpu=False) == "vllm"
    assert resolve_kind("auto", lora=True, gpu=True) == "vllm"
    assert resolve_kind("auto", lora=True, gpu=False) == "hf"  # CPU LoRA kernels are slower than HF


def test_compute_dtype_follows_the_trainer():
    from empo2.engines.hf import compute_dtype

    assert compute_dtype("bf16-mixed", "none") is torch.bfloat16
    assert compute_dtype("16-mixed", "none") is torch.float16
    assert compute_dtype("32-true", "bf16") is torch.bfloat16  # fsdp/fsdp2 compute dtype
    assert compute_dtype(None, "none") is None and compute_dtype("32-true", "none") is None


def test_generation_runs_under_the_trainers_autocast(tiny_model, tokenizer):
    # The first sampled token's log-prob comes from the prompt's forward: under compute=bf16 it must
    # be the bf16-autocast scoring of that token (the same forward: equal to float32 round-off, 1e-5),
    # while float32 scoring differs from it by bf16's rounding, here at least 10x that on one of
    # three prompts (the inputs are fixed, so this is a property of them, not of a draw).
    # (Without the prefix cache: the prompts share the template's opening, and keys and values kept
    # from an earlier bf16 call are rounded within another batch layout, ~1e-4 apart.)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    engine = HFEngine(model, tokenizer, compute=torch.bfloat16, prefix_cache=False)
    apart = []
    for i, prompt in enumerate(_prompts(tokenizer)):
        torch.manual_seed(i)
        gen = engine.generate([prompt], SamplingParams(max_new_tokens=1, temperature=1.0, stop=[]))[0]
        batch = pack([prompt], [gen.token_ids], tokenizer.pad_token_id)
        with torch.no_grad():
            fp32 = response_logprobs(model, batch)[0, 0].item()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = response_logprobs(model, batch)[0, 0].item()
        assert abs(gen.logprobs[0] - bf16) < 1e-5
        apart.append(abs(bf16 - fp32))
    assert max(apart) > 1e-4
