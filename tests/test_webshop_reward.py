"""The WebShop purchase reward, one hand-worked case per branch.

r = r_type × (attribute hits + option hits + price ok) / (#attributes + #options + 1). The type
branches use a tagger with fixed noun lists, so each case's noun overlap is known exactly; the
spaCy tagger is checked on its own below.
"""

import pytest
from thefuzz import fuzz

from empo2.envs.webshop.catalog import Product
from empo2.envs.webshop.goals import Goal
from empo2.envs.webshop.reward import (
    default_tagger, normalise_colour, option_hits, purchase_reward, attribute_hits, type_reward,
)


class FixedNouns:
    """A NounTagger whose nouns are the words of a title listed here (others have none)."""

    def __init__(self, nouns: dict[str, list[str]]):
        self.table = nouns

    def nouns(self, text):
        return self.table.get(text, [])


def shampoo(**over):
    fields = dict(
        asin="B1", title="Brand Shampoo", query="shampoo", category="beauty",
        product_category="Beauty › Hair Care › Shampoos", description="A gentle wash for dry hair.",
        bullet_points=["Made without sulfates"], price_range=[16.79], price_tag="$16.79", price=16.79,
        options={"size": ["8 fl oz", "16 fl oz"], "scent": ["lavender", "coconut"]},
        attributes=["sulfate free", "paraben free"],
    )
    return Product(**{**fields, **over})


def goal(**over):
    fields = dict(
        asin="B1", instruction="i need a sulfate free shampoo for dry hair with size: 16 fl oz, and scent: lavender",
        attributes=["sulfate free", "dry hair"], options=["16 fl oz", "lavender"], price_upper=30.0,
        query="shampoo", name="Brand Shampoo", product_category="Beauty › Hair Care › Shampoos",
    )
    return Goal(**{**fields, **over})


SAME = FixedNouns({"Brand Shampoo": ["brand", "shampoo"]})
CHOSEN = {"size": "16 fl oz", "scent": "lavender"}


def test_everything_right_is_one():
    r = purchase_reward(shampoo(), goal(), CHOSEN, SAME)
    # attributes: "sulfate free" by fuzzy match with the list, "dry hair" as a substring of the
    # description; options 2/2; price 16.79 <= 30: (2 + 2 + 1) / (2 + 2 + 1)
    assert (r.attribute_hits, r.option_hits, r.price_ok, r.r_type) == (2, 2, True, 1.0)
    assert r.total == 1.0


def test_missing_options_wrong_option_and_price():
    assert purchase_reward(shampoo(), goal(), {}, SAME).total == pytest.approx(3 / 5)  # (2 + 0 + 1) / 5
    # "8 fl oz" vs "16 fl oz": token-set similarity 83, not above 85: no hit
    assert fuzz.token_set_ratio("8 fl oz", "16 fl oz") == 83
    assert purchase_reward(shampoo(), goal(), {"size": "8 fl oz", "scent": "lavender"}, SAME).total == pytest.approx(4 / 5)
    assert purchase_reward(shampoo(price=35.0), goal(), CHOSEN, SAME).total == pytest.approx(4 / 5)  # 35 > 30


def test_attribute_by_fuzzy_match_and_by_substring():
    p = shampoo(attributes=["Long-Lasting!"], description="", bullet_points=[], title="Brand Shampoo")
    assert fuzz.token_set_ratio("Long-Lasting!", "long lasting") == 100  # punctuation and case ignored
    assert attribute_hits(p, goal(attributes=["long lasting"])) == 1
    assert attribute_hits(p, goal(attributes=["lasting color"])) == 0  # similarity 80: no hit
    in_title = shampoo(attributes=["other"], title="Brand Shampoo Travel Size", description="")
    in_bullets = shampoo(attributes=["other"], bullet_points=["Great For Travel Size bags"], description="")
    assert attribute_hits(in_title, goal(attributes=["travel size"])) == 1  # title, lower-cased
    assert attribute_hits(in_bullets, goal(attributes=["travel size"])) == 1  # bullet points, lower-cased
    assert attribute_hits(shampoo(attributes=["other"]), goal(attributes=["travel size"])) == 0


def test_colour_normalisation():
    assert normalise_colour("navy blue") == "blue"  # "blue" comes before "navy" in the list: first match wins
    assert normalise_colour("ruby red") == "red"
    assert normalise_colour("x-large") == "x-large"
    # without normalisation "dark blue" and "navy blue" are only 67 similar; both become "blue"
    assert fuzz.token_set_ratio("dark blue", "navy blue") == 67
    assert option_hits(["navy blue"], goal(options=["dark blue"])) == 1
    assert option_hits(["navy green"], goal(options=["dark blue"])) == 0


def test_goal_without_options():
    r = purchase_reward(shampoo(), goal(options=[]), {}, SAME)
    assert r.total == 1.0  # (2 + 0 + 1) / (2 + 0 + 1)


@pytest.mark.parametrize("product_nouns, query, path, expected", [
    # overlap 1/5 = 0.2 (not above 0.2), another query, one shared category level: 0.5
    (["shampoo"], "conditioner", "Beauty › Skin", 0.5),
    # overlap 0.2 but the same query: 1
    (["shampoo"], "shampoo", "Beauty › Skin", 1.0),
    # overlap 0.2 and two shared category levels: 1
    (["shampoo"], "conditioner", "Beauty › Hair Care › Conditioners", 1.0),
    # overlap 2/5 = 0.4 > 0.2: 1
    (["shampoo", "hair"], "conditioner", "Beauty › Skin", 1.0),
])
def test_type_multiplier_one_and_half(product_nouns, query, path, expected):
    g = goal(name="Goal Title")
    tagger = FixedNouns({"Goal Title": ["brand", "shampoo", "hair", "bottle", "pack"], "Bought": product_nouns})
    r_type, *_ = type_reward(shampoo(title="Bought", query=query, product_category=path), g, tagger)
    assert r_type == expected


def test_type_multiplier_low_overlap_overrides_a_query_match():
    g = goal(name="Goal Title")
    eleven = [f"n{i}" for i in range(11)]
    tagger = FixedNouns({"Goal Title": eleven, "One": ["n0"], "None": ["other"]})
    # overlap 1/11 < 0.1: 0.1 even though the query matches
    assert type_reward(shampoo(title="One"), g, tagger)[0] == 0.1
    assert purchase_reward(shampoo(title="One"), g, CHOSEN, tagger).total == pytest.approx(0.1)
    # no shared noun: 0, whatever else matches
    assert type_reward(shampoo(title="None"), g, tagger)[0] == 0.0
    assert purchase_reward(shampoo(title="None"), g, CHOSEN, tagger).total == 0.0
    # a goal title without nouns counts as overlap 0.2: 1 with a query match, else 0.5
    assert type_reward(shampoo(title="None"), goal(name="nothing"), tagger)[0] == 1.0
    other = shampoo(title="None", query="soap", product_category="Home › Bath")
    assert type_reward(other, goal(name="nothing"), tagger)[0] == 0.5


def test_spacy_tagger_finds_the_nouns_of_titles():
    tagger = default_tagger()
    assert tagger.nouns("a bottle of shampoo for dry hair") == ["bottle", "shampoo", "hair"]
    assert "headphones" in tagger.nouns("Kestrel Pro Headphones, Noise Cancelling")
    # the reward with the real tagger: same title, so the type multiplier is 1
    assert purchase_reward(shampoo(title="Alder Shampoo"), goal(name="Alder Shampoo"), CHOSEN).r_type == 1.0
