"""WebShop environment on the bundled synthetic catalog: golden transcripts, pages and transitions,
search, the prompt and answer parsing, and a real rollout (format penalty, one message per step)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2.config import ConfigError, load_config
from empo2.engines import HFEngine, SamplingParams
from empo2.envs import WebShopEnv, env_class
from empo2.envs.webshop.prompt import page_text, parse_answer, step_message
from empo2.envs.webshop.search import ProductSearch
from empo2.envs.webshop.site import SEP, parse_command
from empo2.episode import Episode
from empo2.rollout import run_episodes


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return WebShopEnv(index_dir=str(tmp_path_factory.mktemp("index")))


def goal_with_options(env, n_options=2):
    for i in range(env.num_test_goals):
        g = env.store.goals[i]
        if len(g.options) == n_options and g.price_upper < 1e6:
            return f"webshop/{i}", g
    raise AssertionError("no such goal")


def shop(env, instance, choose_options=True, detour=True):
    """A scripted shopper: search, page to the product, look at a sub-page, choose options, buy."""
    obs, info = env.reset(instance)
    g = env.goal
    assert obs == SEP.join(["WebShop", "Instruction:", g.instruction, "Search"]) and info["task"] == g.instruction
    r = env.step(f"search[{g.query} {' '.join(g.attributes)}]")
    assert r.info["valid"] and "Page 1 (Total results: " in r.observation
    while g.asin.lower() not in env.site.clickables():
        r = env.step("click[next >]")
        assert r.info["valid"], "the goal's product is not in the 50 results"
    r = env.step(f"click[{g.asin.lower()}]")
    assert r.observation.endswith("Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    if detour:
        r = env.step("click[features]")
        assert env.store.products[g.asin].bullet_points[0] in r.observation
        r = env.step("click[< prev]")
        assert "Buy Now" in r.observation
    if choose_options:
        for value in g.options:
            assert env.step(f"click[{value}]").info["valid"]
    return env.step("click[buy now]")


def test_scripted_shopper_reaches_full_reward(env):
    instance, g = goal_with_options(env)
    r = shop(env, instance)
    assert r.done and r.info["success"] and r.info["score"] == 100.0
    assert r.reward == 10.0  # training reward: 10 × success
    assert r.observation.startswith("Thank you for shopping with us!")


def test_right_product_without_options_gets_the_partial_reward(env):
    instance, g = goal_with_options(env)
    r = shop(env, instance, choose_options=False, detour=False)
    terms = r.info["reward_terms"]
    assert terms["option_hits"] == 0 and terms["r_type"] == 1.0
    expected = (len(g.attributes) + 0 + 1) / (len(g.attributes) + 2 + 1)
    assert r.info["score"] == pytest.approx(100 * expected) and not r.info["success"] and r.reward == 0.0


def test_wrong_category_gets_zero(env):
    instance, g = goal_with_options(env)
    goal_words = set(g.name.lower().replace(",", "").split())
    wrong = next(p for p in env.store.products.values()
                 if p.category != env.store.products[g.asin].category
                 and not goal_words & set(p.title.lower().replace(",", "").split()))
    env.reset(instance)
    env.step(f"search[{wrong.title}]")
    while wrong.asin.lower() not in env.site.clickables():
        assert env.step("click[next >]").info["valid"]
    env.step(f"click[{wrong.asin.lower()}]")
    r = env.step("click[buy now]")
    assert r.done and r.info["score"] == 0.0 and r.reward == 0.0 and r.info["reward_terms"]["r_type"] == 0.0


def test_pages_paging_and_no_ops(env):
    env.reset("webshop/0")
    start = env.site.observation()
    for bad in ("click[buy now]", "buy it", "", "click[]", "search[]"):
        r = env.step(bad)
        assert not r.info["valid"] and r.observation == start and r.reward == 0.0 and not r.done
    r = env.step("search[shampoo]")
    assert env.site.state.results and len(env.site.state.results) <= 50
    assert env.site.clickables()[:2] == ["back to search", "next >"]  # no "< prev" on page 1
    assert sum(c.startswith("b0syn") for c in env.site.clickables()) == 10  # 10 results per page
    assert not env.step("search[coffee]").info["valid"]  # no search bar on the results page
    page1 = env.site.observation()
    env.step("click[next >]")
    assert "Page 2 (Total results: " in env.site.observation() and "< prev" in env.site.clickables()
    env.step("click[< prev]")
    assert env.site.observation() == page1
    asin = next(c for c in env.site.clickables() if c.startswith("b0syn"))
    env.step(f"click[{asin}]")
    item = env.site.observation()
    env.step("click[description]")
    assert env.site.clickables() == ["back to search", "< prev"]
    env.step("click[< prev]")
    assert env.site.observation() == item
    env.step("click[< prev]")
    assert env.site.observation() == page1  # item "< prev" returns to the same results page
    env.step("click[back to search]")
    assert env.site.observation() == start and env.site.has_search_bar
    assert env.max_turns("webshop/0") == 15


def test_search_ranks_matching_products_and_is_cached(env, tmp_path):
    products = list(env.store.products.values())
    hits = env.store.search.search("noise cancelling headphones")
    assert hits and all(env.store.products[a].query == "headphones" for a in hits[:5])
    assert env.store.search.search("the of and") == []  # stopwords only: nothing
    again = ProductSearch(products, env.store.search.index_dir.parent)
    assert again.loaded_from_cache and again.search("noise cancelling headphones") == hits
    fresh = ProductSearch(products[:50], tmp_path)
    assert not fresh.loaded_from_cache and ProductSearch(products[:50], tmp_path).loaded_from_cache


def test_instances_split_and_bad_instance(env):
    test, train = env.instances("test"), env.instances("train")
    assert test[0] == "webshop/0" and len(test) == 500 and train[0] == "webshop/500"
    assert len(train) == len(env.store.goals) - 500
    with pytest.raises(ValueError, match="unknown WebShop instance"):
        env.reset("webshop/999999")
    with pytest.raises(ValueError, match="no training goals"):
        WebShopEnv(num_test_goals=100_000)


def test_config_checks_webshop_options(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        load_config(None, ["env.name=webshop", f"env.options.data_dir={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="goals"):
        load_config(None, ["env.name=webshop", "env.options.goals=both"])
    assert env_class("webshop") is WebShopEnv


def test_answer_parsing_and_commands():
    assert parse_answer("<think>the first result fits</think>\n<action>click[B0SYN00012]</action>") == (
        "click[B0SYN00012]", True)
    assert parse_answer("<action> search[red  shoes] </action>") == ("search[red shoes]", False)  # no think
    assert parse_answer("<think>hmm</think> click[buy now]") == ("", False)  # no action tags
    assert parse_command("Click[Buy Now]") == ("click", "buy now")
    assert parse_command("search[ Red Shoes ]") == ("search", "red shoes")
    assert parse_command("buy now") is None


def test_step_message_shows_the_last_two_steps_and_the_actions():
    history = [("WebShop [SEP] Instruction: [SEP] find x [SEP] Search", "search[x]"),
               ("Instruction: [SEP] find x [SEP] Back to Search [SEP] page one", "click[next >]"),
               ("Instruction: [SEP] find x [SEP] Back to Search [SEP] page two", "click[b1]")]
    msg = step_message("find x", history, "Instruction: [SEP] find x [SEP] Back to Search [SEP] item", ["click[buy now]"])
    assert "Steps taken so far: 3." in msg and "step 4" in msg
    assert "search[x]" not in msg and "click[next >]" in msg and "click[b1]" in msg  # only the last two
    assert msg.count('"find x"') == 1 and "Instruction:" not in msg  # the request stated once
    assert msg.endswith("Actions available on this page: click[buy now]")
    assert page_text("WebShop [SEP] Instruction: [SEP] find x [SEP] Search", "find x") == "Search"


def test_rollout_penalises_malformed_answers_and_prompts_one_message_per_step(tiny_model, tokenizer, tmp_path):
    env = WebShopEnv(index_dir=str(tmp_path))
    engine = HFEngine(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer)
    episodes = [Episode(uid=str(i), instance=f"webshop/{500 + i}", group="g") for i in range(2)]
    torch.manual_seed(0)
    stats = run_episodes([env], episodes, engine, tokenizer, SamplingParams(8, 1.0, []), 2048, max_turns=3)
    assert stats.turns == 6 and stats.malformed == 6  # a random model never writes both tags
    for ep in episodes:
        assert ep.truncated and len(ep.steps) == 3
        for t, step in enumerate(ep.steps):
            assert step.reward == pytest.approx(-0.1) and step.info["well_formed"] is False
            prompt = tokenizer.decode(step.prompt_ids)
            assert prompt.count("<|im_start|>user") == 1 and f"Steps taken so far: {t}." in prompt
            assert "<think>" in prompt  # the format instruction
        assert ep.extrinsic_return == pytest.approx(-0.3)


@pytest.mark.slow
@pytest.mark.parametrize("advantage, p", [("grpo", 0), ("gigpo", 0), ("gigpo", 1), ("hgpo", 0), ("hgpo", 1)],
                         ids=["grpo", "gigpo", "gigpo-memory", "hgpo", "hgpo-memory"])
def test_short_fit_on_the_synthetic_catalog(embedded_model, tmp_path, advantage, p):
    """conf/webshop_cpu.yaml with the embedded model, shortened: one iteration of 1 goal × 2
    rollouts, KL to the reference and γ on, then the run's files; with each estimator, and the
    step-level ones also with every iteration in a memory mode."""
    import csv
    import json

    from empo2.fit import main

    over = [f"out_dir={tmp_path}", "name=ws", f"model.name_or_path={embedded_model}", "env.options.max_turns=2",
            f"env.options.index_dir={tmp_path / 'index'}", "rollout.group_size=2", "rollout.max_new_tokens=48",
            "trainer.max_epochs=1", "eval.val_every=0", "memory.tip_max_tokens=16", f"mode.p={p}",
            f"algo.advantage={advantage}",
            "logging.progress_bar=false"]
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "conf" / "webshop_cpu.yaml"
    assert main(["--config", str(config), *over]) == 0
    with (tmp_path / "ws" / "logs" / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["train/optimizer_steps"]) >= 1 and float(row["train/kl"]) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= float(row["rollout/malformed_rate"]) <= 1.0
    episodes = [json.loads(line) for line in (tmp_path / "ws" / "trajectories" / "iter_00000.jsonl").open()]
    assert len(episodes) == 2 and all(1 <= len(ep["steps"]) <= 2 for ep in episodes)
    for ep in episodes:
        assert ep["instance"].startswith("webshop/") and int(ep["instance"].split("/")[1]) >= 500  # training goals
        for step in ep["steps"]:
            assert step["reward"] == pytest.approx(0.0 if step["info"]["well_formed"] else -0.1) or step["info"]["success"]
