"""WebShop as a `TextEnv`: a store (catalog, goals, search index) and one shopper's session.

Why a shared store: the rollout keeps one environment object per episode played at once (16 per
rank in the paper's setup); each would otherwise parse the catalog and load the index again. The
store is read-only, so every environment of a process with the same data options shares one
(`store_for`). A session is cheap: the site's page state and the episode's (page, action)
history.

Rewards (ENVIRONMENTS.md): the environment's own reward is the purchase reward r ∈ [0, 1] on
Buy Now (0 for an episode without a purchase); it is reported as `info["score"]` = 100·r, the
scale papers quote. The *training* reward follows verl-agent, which GiGPO and EMPO² use: 10 on a
successful purchase (r = 1), else 0 (`reward: raw` trains on r itself), and every malformed
answer costs `format_penalty` (the rollout subtracts it; `parse_action` says which are malformed).
Instances are `webshop/<goal index>`: evaluation goals 0..num_test_goals−1, training the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from empo2.envs.base import ENVS, StepResult, TextEnv
from empo2.envs.webshop.catalog import Product, load_catalog, resolve_files
from empo2.envs.webshop.goals import Goal, build_goals
from empo2.envs.webshop.prompt import FORMAT_INSTRUCTION, available_actions, parse_answer, step_message
from empo2.envs.webshop.reward import purchase_reward
from empo2.envs.webshop.site import WebShopSite

if TYPE_CHECKING:
    from empo2.envs.webshop.search import ProductSearch

SUCCESS = 1.0 - 1e-9


@dataclass
class Store:
    products: dict[str, Product]
    goals: list[Goal]
    search: "ProductSearch"


_STORES: dict[tuple, Store] = {}


def store_for(data_dir: str, variant: str, goals: str, seed: int, num_products: Optional[int],
              index_dir: Optional[str]) -> Store:
    """The process's store for these options (built on first use)."""
    from empo2.envs.webshop.search import ProductSearch  # bm25s: imported only when WebShop is played

    files = resolve_files(data_dir, variant)
    key = (str(files.products), str(files.attributes), goals, seed, num_products, index_dir)
    if key not in _STORES:
        rng = random.Random(seed)
        products = load_catalog(files, rng, num_products, with_human=goals == "human")
        _STORES[key] = Store(
            {p.asin: p for p in products}, build_goals(products, rng, seed, goals),
            ProductSearch(products, Path(index_dir) if index_dir else None),
        )
    return _STORES[key]


@ENVS.register("webshop")
class WebShopEnv(TextEnv):
    name: ClassVar[str] = "webshop"
    default_max_turns: ClassVar[int] = 15
    prompt_history: ClassVar[str] = "latest"

    def __init__(
        self,
        data_dir: str = "synthetic",
        variant: str = "1000",
        goals: str = "synthetic",
        seed: int = 233,
        num_products: Optional[int] = None,
        num_test_goals: int = 500,
        max_train_goals: Optional[int] = None,
        max_turns: int = 15,
        reward: str = "success",
        success_reward: float = 10.0,
        format_penalty: float = 0.1,
        history_length: int = 2,
        index_dir: Optional[str] = None,
    ) -> None:
        """`data_dir`: `synthetic` (the bundled catalog), `official` (the folder named by
        $EMPO2_WEBSHOP_DATA) or a folder with the official files. `variant`: file suffix (`1000` for the
        small official set, `""` for the full one). `goals`: `synthetic` or `human`. `seed`: the
        original's 233 makes prices and goal order reproducible. `reward`: `success` trains on
        success_reward × success, `raw` on the purchase reward r."""
        self.check_options(data_dir=data_dir, variant=variant, goals=goals, reward=reward,
                           num_test_goals=num_test_goals, max_turns=max_turns, history_length=history_length)
        self.store = store_for(data_dir, variant, goals, seed, num_products, index_dir)
        if num_test_goals >= len(self.store.goals):
            raise ValueError(f"env.options.num_test_goals: {num_test_goals} leaves no training goals "
                             f"(the catalog yields {len(self.store.goals)} goals)")
        self.num_test_goals, self.max_train_goals = num_test_goals, max_train_goals
        self.default_max_turns = max_turns  # type: ignore[misc]
        self.reward_kind, self.success_reward = reward, success_reward
        self.format_penalty = format_penalty  # type: ignore[misc]
        self.history_length = history_length
        self.site = WebShopSite(self.store.products, self.store.search)
        self.goal: Optional[Goal] = None
        self.history: list[tuple[str, str]] = []
        self._observation = ""

    @staticmethod
    def check_options(data_dir: str = "synthetic", variant: str = "1000", goals: str = "synthetic",
                      reward: str = "success", num_test_goals: int = 500, max_turns: int = 15,
                      history_length: int = 2, **_: Any) -> None:
        """Cheap checks run at config time (the files must exist; nothing is loaded)."""
        if goals not in ("synthetic", "human"):
            raise ValueError(f"goals: must be 'synthetic' or 'human', got {goals!r}")
        if reward not in ("success", "raw"):
            raise ValueError(f"reward: must be 'success' or 'raw', got {reward!r}")
        if num_test_goals < 0 or max_turns < 1 or history_length < 0:
            raise ValueError("num_test_goals and history_length must be >= 0, max_turns >= 1")
        files = resolve_files(data_dir, variant)
        if goals == "human" and files.human is None:
            raise ValueError(f"goals=human needs items_human_ins.json in {files.products.parent}")

    # ------------------------------------------------------------------ instances
    def instances(self, split: str) -> list[str]:
        n = len(self.store.goals)
        if split == "test":
            ids = range(self.num_test_goals)
        elif split == "train":
            end = n if self.max_train_goals is None else min(n, self.num_test_goals + self.max_train_goals)
            ids = range(self.num_test_goals, end)
        else:
            raise ValueError(f"unknown split {split!r} (train or test)")
        return [f"webshop/{i}" for i in ids]

    @classmethod
    def check_instance(cls, instance: str, **options: Any) -> None:
        head, _, tail = instance.partition("/")
        if head != "webshop" or not tail.isdigit():
            raise ValueError(f"{instance!r} is no WebShop instance; they are webshop/<goal index>")

    def _goal_index(self, instance: str) -> int:
        head, _, tail = instance.partition("/")
        if head != "webshop" or not tail.isdigit() or int(tail) >= len(self.store.goals):
            raise ValueError(f"unknown WebShop instance {instance!r} (webshop/0..webshop/{len(self.store.goals) - 1})")
        return int(tail)

    # ------------------------------------------------------------------ episode
    def reset(self, instance: str) -> tuple[str, dict[str, Any]]:
        self.goal = self.store.goals[self._goal_index(instance)]
        self.site.start(self.goal.instruction)
        self.history = []
        self._observation = self.site.observation()
        return self._observation, {"task": self.goal.instruction, "score": 0.0}

    def step(self, action: str) -> StepResult:
        if self.goal is None:
            raise RuntimeError("WebShopEnv.step before reset")
        self.history.append((self._observation, action))
        did, purchase = self.site.act(action)
        self._observation = self.site.observation()
        info: dict[str, Any] = {"valid": did, "raw_valid": did, "score": 0.0, "success": False}
        if purchase is None:
            return StepResult(self._observation, 0.0, False, info)
        r = purchase_reward(purchase.product, self.goal, purchase.options)
        success = r.total >= SUCCESS
        info.update(score=100.0 * r.total, success=success, purchased=purchase.product.asin,
                    reward_terms=r.as_info())
        reward = r.total if self.reward_kind == "raw" else self.success_reward * float(success)
        return StepResult(self._observation, reward, True, info)

    # ------------------------------------------------------------------ prompting
    def _message(self) -> str:
        actions = available_actions(self.site.has_search_bar, self.site.clickables())
        return step_message(self.goal.instruction, self.history, self._observation, actions, self.history_length)

    def first_message(self, observation: str, info: dict[str, Any]) -> str:
        return self._message()

    def next_message(self, observation: str, info: dict[str, Any]) -> str:
        return self._message()

    def turn_instruction(self) -> str:
        return FORMAT_INSTRUCTION

    def parse_action(self, text: str) -> tuple[str, bool]:
        return parse_answer(text)

    # ------------------------------------------------------------------ warm start
    def demonstrations(self, instances: list[str]) -> list[list[str]]:
        """A scripted shopper: search for the request's words, page to the goal's product, choose
        its options, buy (it plays each instance to find the pages)."""
        out = []
        for instance in instances:
            self.reset(instance)
            goal = self.goal
            actions = [f"search[{' '.join([goal.query, *goal.attributes])}]"]
            self.step(actions[-1])
            while goal.asin.lower() not in self.site.clickables() and "next >" in self.site.clickables():
                actions.append("click[next >]")
                self.step(actions[-1])
            actions += [f"click[{goal.asin.lower()}]", *(f"click[{v}]" for v in goal.options), "click[buy now]"]
            out.append(actions)
        return out

    def answer_for(self, action: str) -> str:
        if action.startswith("search["):
            why = "I search for the words of the request."
        elif action == "click[next >]":
            why = "The product that fits is not on this page; I look at the next one."
        elif action == "click[buy now]":
            why = "The product and its options match the request; I buy it."
        else:
            why = "This item matches the request; I select it."
        return f"<think>{why}</think>\n<action>{action}</action>"
