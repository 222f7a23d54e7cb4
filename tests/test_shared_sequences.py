"""One forward per episode: token-exact histories make an episode's prompts a chain, and a chain
scored as one sequence gives every step the log-probs (and the update the gradient) it gets alone."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import KEYROOM_OPTIONS, one_sgd_step
from empo2.config import load_config
from empo2.conversation import PromptLayout
from empo2.engines import HFEngine, SamplingParams
from empo2.engines.base import Generation, RolloutEngine
from empo2.envs import KeyRoomEnv
from empo2.episode import Episode
from empo2.module import EMPO2Module
from empo2.rollout import run_episodes
from empo2.training_rows import Segment, TrainingRow, chain_groups, chains, mini_batches, segments

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)

INSTANCES = [f"find/{i}" for i in range(4)]


def tips_for(episodes):
    """Two tips per step that name the step (so every step's tips differ)."""
    return [[f"step {len(ep.steps)}: try another room", "focus only on the target"] for ep in episodes]


def play(engine, tokenizer, budget=1024, layout=PromptLayout(), tips=None, turns=4, n=2):
    envs = [KeyRoomEnv(**KEYROOM_OPTIONS) for _ in range(len(INSTANCES) * n)]
    episodes = [Episode(uid=f"{i}-{k}", instance=inst, group=inst, mode="on_policy_memory" if tips else "on_policy")
                for i, inst in enumerate(INSTANCES) for k in range(n)]
    torch.manual_seed(0)
    run_episodes(envs, episodes, engine, tokenizer, SamplingParams(8, 1.0, ["\n"]), budget, max_turns=turns,
                 tips_for=tips, layout=layout)
    return episodes


class OddTokens(RolloutEngine):
    """Answers `look around` as ids the tokenizer would never produce for that text (one id per
    character): a history rebuilt from the text would differ from the sampled ids."""

    def __init__(self, tokenizer):
        self.ids = [tokenizer.convert_tokens_to_ids(c) for c in "look"] + tokenizer(" around\n", add_special_tokens=False)["input_ids"]
        assert self.ids != tokenizer("look around\n", add_special_tokens=False)["input_ids"]

    def generate(self, prompts, params):
        return [Generation(list(self.ids), [0.0] * len(self.ids), "look around\n", "stop") for _ in prompts]


@pytest.fixture(scope="module")
def engine(warm_model, tokenizer):
    return HFEngine(AutoModelForCausalLM.from_pretrained(warm_model), tokenizer)


@pytest.fixture(scope="module")
def sampled(engine, tokenizer):
    """Episodes sampled by the warm model: without tips, and with tips at every step."""
    return {"plain": play(engine, tokenizer), "tips": play(engine, tokenizer, tips=tips_for)}


def assert_chain(prompts, responses):
    for t in range(len(prompts) - 1):
        assert chains(prompts[t], responses[t], prompts[t + 1]), f"step {t + 1} does not extend step {t}"
        start = len(prompts[t])
        assert prompts[t + 1][start:start + len(responses[t])] == responses[t]  # the sampled ids, unchanged


def test_rollout_prompts_chain_with_and_without_tips(sampled, tokenizer):
    multi = 0
    for kind, episodes in sampled.items():
        for ep in episodes:
            prompts, responses = [s.prompt_ids for s in ep.steps], [s.response_ids for s in ep.steps]
            assert all(s.dropped_turns == 0 for s in ep.steps)
            assert_chain(prompts, responses)
            # the tip-free rendering of the same episode forms its own chain, without any tip
            tipfree = ep.step_prompts(tokenizer, 1024, with_tips=False)
            assert_chain(tipfree, responses)
            assert all("<tip>" not in tokenizer.decode(p) for p in tipfree)
            if kind == "tips":
                assert all(p != q for p, q in zip(prompts, tipfree))
            else:
                assert tipfree == prompts
            # replaying the rollout's own rendering gives exactly the prompts the engine saw
            assert ep.step_prompts(tokenizer, 1024, with_tips=True) == prompts
            multi += len(ep.steps) > 1
    assert multi > 0


def test_history_holds_the_sampled_ids_not_the_retokenized_action(tokenizer):
    odd = OddTokens(tokenizer)
    episodes = play(odd, tokenizer, turns=3, n=1)
    for ep in episodes:
        assert len(ep.steps) == 3
        assert_chain([s.prompt_ids for s in ep.steps], [s.response_ids for s in ep.steps])
    # the authors' layout re-renders the parsed action: no chain, the odd ids are gone
    parsed = play(odd, tokenizer, turns=3, n=1, layout=PromptLayout("parsed", False))
    p = [s.prompt_ids for s in parsed[0].steps]
    assert not chains(p[0], odd.ids, p[1])
    assert chain_groups(p, [s.response_ids for s in parsed[0].steps]) == [[0], [1], [2]]


def test_chain_breaks_where_history_is_dropped_and_restarts(tokenizer):
    first = play(OddTokens(tokenizer), tokenizer, turns=1, n=1)[0].steps[0]
    budget = len(first.prompt_ids) + 2 * 45  # room for about two more turns, not four
    ep = play(OddTokens(tokenizer), tokenizer, budget=budget, turns=6, n=1)[0]
    dropped = [s.dropped_turns for s in ep.steps]
    assert dropped[0] == 0 and max(dropped) > 0 and all(len(s.prompt_ids) <= budget for s in ep.steps)
    groups = chain_groups([s.prompt_ids for s in ep.steps], [s.response_ids for s in ep.steps])
    assert len(groups) > 1 and [i for g in groups for i in g] == list(range(6))
    for g in groups:  # a segment starts where history was dropped, then chains again
        assert_chain([ep.steps[i].prompt_ids for i in g], [ep.steps[i].response_ids for i in g])


def _module(model_dir, sequences):
    cfg = load_config(None, [f"model.name_or_path={model_dir}", "model.lora.enabled=false",
                             f"optim.sequences={sequences}", "rollout.max_prompt_tokens=1024",
                             "optim.micro_batch_size=64"])
    module = EMPO2Module(cfg)
    module.configure_model()
    return module


def _pairs(sampled, tokenizer, budget_break_episode):
    """(prompts, responses) in step order: on-policy, with-tips (on-policy-memory) and tip-free
    (off-policy) chains of sampled episodes, and an episode whose chain breaks."""
    prompts, responses = [], []
    for ep in sampled["plain"] + sampled["tips"]:
        prompts += [s.prompt_ids for s in ep.steps]
        responses += [s.response_ids for s in ep.steps]
    for ep in sampled["tips"]:
        prompts += ep.step_prompts(tokenizer, 1024, with_tips=False)
        responses += [s.response_ids for s in ep.steps]
    prompts += [s.prompt_ids for s in budget_break_episode.steps]
    responses += [s.response_ids for s in budget_break_episode.steps]
    return prompts, responses


def test_span_logprobs_equal_each_steps_own(warm_model, sampled, tokenizer):
    first = play(OddTokens(tokenizer), tokenizer, turns=1, n=1)[0].steps[0]
    broken = play(OddTokens(tokenizer), tokenizer, budget=len(first.prompt_ids) + 90, turns=6, n=1)[0]
    prompts, responses = _pairs(sampled, tokenizer, broken)
    shared, alone = _module(warm_model, "shared"), _module(warm_model, "per_step")
    groups = chain_groups(prompts, responses)
    assert max(len(g) for g in groups) >= 3 and len(groups) < len(prompts)  # sharing happens
    a = shared.compute_logprobs(prompts, responses)
    b = alone.compute_logprobs(prompts, responses)
    # fp32 forward of a 2-layer, 64-wide model: log-probs are sums of a few hundred products of
    # O(1) numbers, rounded at ~6e-8 relative; another sequence length changes only the order of
    # those sums (measured 1.9e-6), while a span that saw the wrong prefix is off by > 1e-2.
    gap = max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))
    assert all(len(u) == len(r) for u, r in zip(a, responses)) and gap <= 1e-5, gap


def test_one_ppo_step_on_segments_equals_per_step_rows(warm_model, sampled):
    rows = []
    g = torch.Generator().manual_seed(0)
    for ep in sampled["plain"]:
        adv = float(torch.randn(1, generator=g))
        rows += [TrainingRow.on_policy(s.prompt_ids, s.response_ids, adv, episode=ep.uid) for s in ep.steps]
    assert any(len(seg.rows) > 1 for seg in segments(rows, shared=True))
    weights = {}
    for sequences in ("shared", "per_step"):
        cfg = load_config(None, [f"model.name_or_path={warm_model}", "model.lora.enabled=false", "optim.grad_clip=0",
                                 f"optim.sequences={sequences}", "rollout.max_prompt_tokens=1024",
                                 "optim.micro_batch_size=64", "optim.max_tokens_per_micro_batch=4096"])
        module = one_sgd_step(cfg, [replace(r) for r in rows], lr=1.0)
        weights[sequences] = torch.cat([p.detach().flatten() for p in module.parameters()])
    start = torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(warm_model).parameters()])
    da, db = weights["shared"] - start, weights["per_step"] - start
    # SGD with lr 1: the change is the gradient; the two layouts differ only in fp32 summation order
    # (measured 4.6e-7 relative); a span trained on the wrong prefix or a lost row moves it by > 1e-2
    assert float(db.norm()) > 1e-3
    assert float((da - db).norm()) <= 1e-5 * float(db.norm()), float((da - db).norm() / db.norm())


def test_segments_and_mini_batches_by_hand():
    def row(episode, prompt, response):
        return TrainingRow.on_policy(prompt, response, 1.0, episode=episode)

    rows = [row("a", [1, 2], [3]), row("a", [1, 2, 3, 9], [4, 5]), row("a", [7, 7], [8]),  # chain, then a break
            row("b", [1, 2, 3, 9, 4, 5, 6], [1]),  # extends a's chain but belongs to another episode
            row("b", [1, 2, 3, 9, 4, 5, 6, 1, 2], [2])]
    segs = segments(rows, shared=True)
    assert [[rows.index(r) for r in s.rows] for s in segs] == [[0, 1], [2], [3, 4]]
    assert segs[0].sequence == [1, 2, 3, 9, 4, 5] and segs[0].spans == [(2, 1), (4, 2)]
    assert [len(s.rows) for s in segments(rows, shared=False)] == [1] * 5
    assert not chains([1, 2], [3], [1, 2, 3])  # the next prompt must add at least one token
    # 3 segments of 2, 1, 2 rows; 10 rows over all ranks in mini-batches of 4 -> 3 optimizer steps
    batches = mini_batches([2, 1, 2], 10, 4, epochs=2, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 6 and sorted(i for b in batches[:3] for i in b) == [0, 1, 2]
    # per-step rows cut exactly as torch.tensor_split did: equal shares in shuffled order
    order = torch.randperm(7, generator=torch.Generator().manual_seed(1)).tolist()
    cut = mini_batches([1] * 7, 7, 3, epochs=1, generator=torch.Generator().manual_seed(1))
    assert cut == [c.tolist() for c in torch.tensor_split(torch.tensor(order), 3)]


def test_shared_segment_is_one_sequence_in_the_batch(tokenizer):
    from empo2.token_batch import build_span_batch

    seg = Segment([TrainingRow.on_policy([5, 6], [7], 1.0), TrainingRow.on_policy([5, 6, 7, 8], [9, 10], 1.0)])
    batch = build_span_batch("padded", [seg.sequence], [seg.spans], 0)
    assert batch.packed and batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert batch.logit_index.tolist() == [1, 3, 4]  # the positions that predict 7, 9 and 10
    assert batch.response_ids.tolist() == [[7, 0], [9, 10]] and batch.response_mask.tolist() == [[1, 0], [1, 1]]
    single = build_span_batch("padded", [[5, 6, 7]], [[(2, 1)]], 0)
    assert not single.packed  # a one-span row keeps the configured layout
