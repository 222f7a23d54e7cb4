"""Shopping goals: what the customer asks for, with the facts the reward checks.

Why goals are built this way: GiGPO and EMPO² train on the original's *synthetic* goals, one per
combination of a product's option values, each carrying the product's attributes named in its
instruction and a price ceiling. The ceiling is drawn per product: of the first four multiples of
$10 above the product's price, two are sampled and the larger is kept (no ceiling when fewer
than two exist). Human-written goals (one per instruction in `items_human_ins.json`) use the same
ceiling rule and the options the writer named.

Reproducibility follows the original's order of random draws: one random state is seeded, the
catalog's range prices are drawn, then the ceilings in goal order, then the state is seeded again
and the goal list shuffled. Evaluation uses goals 0–499 of the shuffled list, training the rest.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from empo2.envs.webshop.catalog import Product

PRICE_STEPS = [10.0 * i for i in range(1, 100)]
NO_CEILING = 1_000_000.0


@dataclass
class Goal:
    asin: str
    """The product the goal was made from."""
    instruction: str
    """What the customer asks, as shown to the agent."""
    attributes: list[str]
    """Attributes the instruction names (each must be found in the bought product)."""
    options: list[str]
    """Option values the instruction names (each must be selected when buying)."""
    price_upper: float
    """Price ceiling ($1,000,000 when none is stated)."""
    query: str
    """Search query of the goal's product (type match)."""
    name: str
    """Title of the goal's product (noun overlap)."""
    product_category: str
    """Category path of the goal's product."""
    option_names: list[str] = field(default_factory=list)
    """Option name of each value (synthetic goals; empty for human goals)."""


def draw_ceiling(price: float, rng: random.Random) -> tuple[float, str]:
    """(price ceiling, the instruction's price clause)."""
    above = [p for p in PRICE_STEPS if p > price][:4]
    if len(above) < 2:
        return NO_CEILING, ""
    upper = max(rng.sample(above, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def synthetic_goals(products: list[Product], rng: random.Random) -> list[Goal]:
    """One goal per option combination of every product that has a synthetic instruction."""
    goals: list[Goal] = []
    for p in products:
        if not p.instruction:
            continue
        if not p.instruction_attributes:
            raise ValueError(f"WebShop attributes file: product {p.asin} has an instruction but no instruction_attributes")
        upper, price_text = draw_ceiling(p.price, rng)
        names = sorted(p.options)
        for combo in itertools.product(*(p.options[n] for n in names)):
            option_text = ", and ".join(f"{n}: {v}" for n, v in zip(names, combo))
            goals.append(Goal(
                asin=p.asin, instruction=f"{p.instruction}{' with ' + option_text if option_text else ''}{price_text}",
                attributes=list(p.instruction_attributes), options=list(combo), price_upper=upper,
                query=p.query, name=p.title, product_category=p.product_category, option_names=names,
            ))
    return goals


def human_goals(products: list[Product], rng: random.Random) -> list[Goal]:
    """One goal per human-written instruction that names at least one attribute."""
    goals: list[Goal] = []
    for p in products:
        for entry in p.human_instructions:
            attributes = list(entry.get("instruction_attributes") or [])
            if not attributes:
                continue
            upper, price_text = draw_ceiling(p.price, rng)
            goals.append(Goal(
                asin=p.asin, instruction=str(entry["instruction"]).strip(".") + price_text, attributes=attributes,
                options=[str(o) for o in entry.get("instruction_options") or []], price_upper=upper,
                query=p.query, name=p.title, product_category=p.product_category,
            ))
    return goals


def build_goals(products: list[Product], rng: random.Random, seed: int, kind: str = "synthetic") -> list[Goal]:
    """Goals of `kind` (synthetic | human), shuffled after reseeding `rng` with `seed`."""
    if kind not in ("synthetic", "human"):
        raise ValueError(f"env.options.goals: must be 'synthetic' or 'human', got {kind!r}")
    goals = synthetic_goals(products, rng) if kind == "synthetic" else human_goals(products, rng)
    if not goals:
        raise ValueError(f"WebShop: the catalog yields no {kind} goals (no product has instructions)")
    rng.seed(seed)
    rng.shuffle(goals)
    return goals
