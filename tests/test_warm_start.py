"""The supervised warm start: demonstrations, their prompts, the loss, training and `model.init_from`."""

import json

import pytest
import torch
from safetensors.torch import load_file

from empo2.config import ConfigError, load_config
from empo2.demonstrations import ReplayEngine, answer_token_ids, replay
from empo2.conversation import PromptLayout
from empo2.engines.base import Generation, SamplingParams
from empo2.engines.hf import HFEngine
from empo2.envs import KeyRoomEnv
from empo2.episode import Episode
from empo2.models import build_policy, load_causal_lm
from empo2.rollout import run_episodes
from empo2.training_rows import mini_batches
from empo2.sft import DemoSequence, SequenceBatches, answer_nll, demo_sequences, sft

from conftest import tiny_overrides

ROOMS3 = {"num_rooms": 3, "objects_per_room": 2, "max_turns": 4, "num_train": 8, "num_test": 4}


@pytest.mark.parametrize("options", [ROOMS3, {**ROOMS3, "target_in_start_room": True},
                                     {"num_rooms": 6, "objects_per_room": 3, "max_turns": 6}])
def test_keyroom_demonstrations_replay_to_success(tokenizer, options):
    env = KeyRoomEnv(**options)
    instances = env.instances("train")
    done, failed = replay(env, instances, tokenizer, 1024, ["\n"])
    assert failed == [] and len(done) == len(instances)
    for ep in done:
        assert ep.success and ep.steps[-1].action.startswith("focus on")
        assert all(s.info["raw_valid"] for s in ep.steps)  # the answers are exact valid actions
    # The explorer does not always take the first door listed (it knows the task, not the house).
    if options["num_rooms"] == 6:
        listed_first = []
        for instance in instances:
            env._build(instance)
            listed_first.append(f"go to {next(r for r in env._layout if r != 'hallway')}")
        taken_first = [ep.steps[0].action for ep in done]
        assert sum(a != b for a, b in zip(taken_first, listed_first)) > len(instances) // 2


def test_webshop_demonstrations_replay_to_success(tokenizer):
    from empo2.envs.webshop.env import WebShopEnv

    env = WebShopEnv(data_dir="synthetic", max_turns=15)
    instances = env.instances("train")[:6]
    done, failed = replay(env, instances, tokenizer, 4096, ["</action>"])
    assert failed == [] and len(done) == 6
    for ep in done:
        assert ep.steps[-1].info["score"] == 100.0
        assert all(s.info["well_formed"] for s in ep.steps)  # <think> and <action> in every answer
        assert tokenizer.decode(ep.steps[0].response_ids).endswith("</action>")  # the stop is not doubled


@pytest.mark.slow
def test_sciworld_gold_demonstrations_replay_to_success(tokenizer, tmp_path):
    from empo2.envs.sciworld import ScienceWorldEnv

    env = ScienceWorldEnv(tasks=["find-non-living-thing"], examples=1, examples_cache=str(tmp_path))
    try:
        instances = env.instances("train")[:2]
        done, failed = replay(env, instances, tokenizer, 4500, ["\n"], max_turns=1)
    finally:
        env.close()
    assert failed == [] and [ep.instance for ep in done] == instances
    assert all(ep.steps[-1].info.get("success") for ep in done)
    assert all(len(ep.steps) > 1 for ep in done)  # a turn cap below the path's length does not cut it


class IdsReplay(ReplayEngine):
    """Answers with recorded response ids, one per call (a sampled episode played again)."""

    def __init__(self, tokenizer, responses: list[list[int]]) -> None:
        super().__init__(tokenizer, [tokenizer.decode(r, skip_special_tokens=True) for r in responses])
        self.responses = responses

    def generate(self, prompts, params):
        text = self.answers[self.turn]
        ids = self.responses[self.turn]
        self.turn += 1
        return [Generation(list(ids), [0.0] * len(ids), text, "stop")]


@pytest.mark.parametrize("layout", [PromptLayout(), PromptLayout("parsed", False)], ids=["sampled", "parsed"])
def test_replayed_prompts_are_the_rollout_prompts(tiny_model, tokenizer, layout):
    """Same history, same prompt: replaying a sampled episode renders, step by step, the token ids
    the rollout sampled with (the history is the sampled response ids by default, the parsed
    actions under `rollout.history_tokens: parsed`)."""
    env = KeyRoomEnv(**ROOMS3)
    policy = load_causal_lm(tiny_model)
    engine = HFEngine(policy, tokenizer)
    sampled = [Episode(uid=f"s{k}", instance="find/3", group="g") for k in range(4)]
    torch.manual_seed(0)
    run_episodes([env], sampled, engine, tokenizer, SamplingParams(max_new_tokens=8, temperature=1.0), 1024, layout=layout)
    for ep in sampled:
        again = Episode(uid="r", instance="find/3", group="r")
        replay = IdsReplay(tokenizer, [s.response_ids for s in ep.steps]) if layout.history_tokens == "sampled" \
            else ReplayEngine(tokenizer, [s.action for s in ep.steps])
        run_episodes([env], [again], replay, tokenizer, SamplingParams(max_new_tokens=1, temperature=0.0), 1024,
                     layout=layout)
        assert [s.prompt_ids for s in again.steps] == [s.prompt_ids for s in ep.steps]


def test_answer_tokens_end_like_a_sampled_answer(tokenizer):
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    ids = answer_token_ids(tokenizer, "go to kitchen", ["\n"])
    assert ids[-len(newline):] == newline and tokenizer.decode(ids) == "go to kitchen\n"
    assert tokenizer.decode(answer_token_ids(tokenizer, "<action>x</action>", ["</action>"])) == "<action>x</action>"
    assert answer_token_ids(tokenizer, "look around", [])[-1] == tokenizer.eos_token_id


def test_loss_covers_answer_tokens_only(tiny_model, tokenizer):
    """The padded batch's loss equals the token mean, over answer tokens only, of −log p computed
    by hand from one full forward per row (prompt tokens and padding carry nothing)."""
    model = load_causal_lm(tiny_model).eval()
    rows = [(tokenizer("a short prompt")["input_ids"], [11, 12, 13]),
            (tokenizer("a much longer prompt with many more words in it")["input_ids"], [21, 22])]
    sequences = [DemoSequence(p + a, [(len(p), len(a))]) for p, a in rows]
    with torch.no_grad():
        got = float(answer_nll(model, sequences, tokenizer.pad_token_id))
        terms = []
        for prompt, answer in rows:
            logits = model(torch.tensor([prompt + answer])).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1)
            terms += [-float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(answer)]
    # fp32 log-softmax over 49k logits vs the float64 reference: relative error well under 1e-5.
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_a_demonstration_is_one_sequence_with_the_per_step_loss(tiny_model, tokenizer):
    """KeyRoom prompts chain, so each demonstration becomes one sequence with an answer span per
    step, and its answer NLL is the per-step rows' (each span sees exactly its own step's prompt)."""
    env = KeyRoomEnv(**ROOMS3)
    done, _ = replay(env, env.instances("train")[:4], tokenizer, 1024, ["\n"])
    shared, per_step = demo_sequences(done, shared=True), demo_sequences(done, shared=False)
    assert [q.rows for q in shared] == [len(ep.steps) for ep in done] and max(q.rows for q in shared) > 1
    assert len(per_step) == sum(len(ep.steps) for ep in done) and all(q.rows == 1 for q in per_step)
    assert sum(len(q.ids) for q in shared) < sum(len(q.ids) for q in per_step)  # the history once, not per step
    model = load_causal_lm(tiny_model).eval()
    with torch.no_grad():
        one = float(answer_nll(model, shared, tokenizer.pad_token_id))
        each = float(answer_nll(model, per_step, tokenizer.pad_token_id))
    # The same fp32 terms summed in another order (and, packed, attention over the same prefix in
    # another kernel): agreement to float32 rounding, far inside 1e-5 relative.
    assert one == pytest.approx(each, rel=1e-5)


def test_sequence_batches_cover_each_sequence_once_per_epoch():
    sequences = [DemoSequence([1] * (n + 2), [(1, 1)] * n) for n in (3, 1, 4, 1, 5, 2)]  # 16 rows
    sampler = SequenceBatches(sequences, batch_size=5, seed=0)
    epochs = [list(sampler) for _ in range(2)]
    for batches in epochs:
        assert len(batches) <= len(sampler) == 4  # ⌈16 / 5⌉
        assert sorted(i for b in batches for i in b) == list(range(6))
    # Each epoch is the trainer's mini-batch cut drawn from one generator that carries on between
    # epochs (a new shuffle per epoch, the same ones for the same seed).
    generator = torch.Generator().manual_seed(0)
    expected = [[b for b in mini_batches([3, 1, 4, 1, 5, 2], 16, 5, 1, generator) if b] for _ in range(2)]
    assert epochs == expected


def sft_overrides(model_dir, tmp_path, name="sft", **extra):
    return tiny_overrides(model_dir, tmp_path, name=name, **{
        "sft.tasks": "[find,find-here]", "sft.epochs": 12, "sft.lr": 3e-3, "sft.batch_size": 8,
        "sft.val_fraction": 0.25, **extra})


@pytest.mark.slow
def test_sft_raises_held_out_likelihood_and_fit_starts_from_it(tiny_model, tmp_path):
    cfg = load_config(None, sft_overrides(tiny_model, tmp_path, **{"model.lora.enabled": False}))
    policy_dir = sft(cfg)
    record = json.loads((policy_dir / "warm_start.json").read_text())
    nll = record["held_out_nll"]
    # A random model's answer NLL is about ln(49,152) ≈ 10.8 nats; the answers use a few dozen
    # distinct tokens, so learning even their frequencies brings it below ln(40) ≈ 3.7.
    assert len(nll) == 1 + 12 and nll[0] > 9 and nll[-1] < 3.7
    assert record["held_out_rows"] > 0 and record["failed_to_replay"] == []
    # Demonstrations came from both task families and never from the evaluation split.
    sources = record["sources"]
    assert [s["options"]["target_in_start_room"] for s in sources] == [False, True]
    assert all(i.startswith("find/") and int(i.split("/")[1]) < 8 for s in sources for i in s["instances"])
    assert (tmp_path / "sft" / "logs" / "metrics.csv").is_file()

    # Starting from it loads exactly those weights (LoRA adapters on top start at zero).
    saved = load_file(str(policy_dir / "model.safetensors"))
    run = load_config(None, tiny_overrides(tiny_model, tmp_path, name="rl", **{"model.init_from": str(policy_dir)}))
    policy = build_policy(run.model, run.seed)
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in policy.state_dict().items() if "lora_" not in k}
    assert set(saved) <= set(base)
    assert all(torch.equal(saved[k], base[k]) for k in saved)
    assert not torch.equal(saved["model.embed_tokens.weight"], load_causal_lm(tiny_model).state_dict()["model.embed_tokens.weight"])


def test_sft_refuses_evaluation_instances(tiny_model, tmp_path):
    cfg = load_config(None, sft_overrides(tiny_model, tmp_path, **{"sft.tasks": "null", "sft.split": "test"}))
    with pytest.raises(ConfigError, match=r"sft: 4 demonstrated instance\(s\) are evaluation instances \(e.g. find/10\)"):
        sft(cfg)
    assert not (tmp_path / "sft").exists()


def test_init_from_checked_before_the_model_loads(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="model.init_from: .* is not a model folder"):
        load_config(None, tiny_overrides(tiny_model, tmp_path, **{"model.init_from": str(tmp_path / "nothing")}))


def test_init_from_of_another_architecture_is_named(tiny_model, embedded_model, tmp_path):
    from empo2.models import resolve

    run = load_config(None, tiny_overrides(tiny_model, tmp_path, **{"model.init_from": resolve(embedded_model)}))
    with pytest.raises(ValueError, match=r"model.init_from: .* is not a .* model \(.*hidden_size 576 vs 64"):
        build_policy(run.model, 0)
