"""WebShop catalog and goals: the original's normalisation rules on a tiny file in the official
schema, reproducible prices and goals, the splits, and the bundled synthetic catalog."""

import json
import random

import pytest

from empo2.envs.webshop.catalog import (
    DATA_ENV_VAR, DUMMY_ATTRIBUTE, SYNTHETIC_DIR, CatalogFiles, load_catalog, parse_price, resolve_files,
)
from empo2.envs.webshop.goals import NO_CEILING, build_goals, draw_ceiling, human_goals, synthetic_goals
from empo2.envs.webshop.synthetic import write


def product(asin, name="Thing", pricing="$10.00", options=None, **extra):
    return {"asin": asin, "name": name, "query": " Widget ", "category": "home", "product_category": "A › B › C",
            "full_description": "A fine thing.", "small_description": ["Point one", "Point two"], "pricing": pricing,
            "images": [], "customization_options": options or {}, **extra}


@pytest.fixture
def official(tmp_path):
    """A tiny catalog in the official schema, exercising every normalisation rule."""
    items = [
        product("B000000001", "First", "$12.50", {"Color": [{"value": " Black/White ", "image": None}],
                                                  "Size": [{"value": "Large"}, {"value": "X-Large "}],
                                                  "Style": None}),
        product("nan", "Not a product"),
        product("B00000000012", "ASIN too long"),
        product("B000000001", "Duplicate of the first"),
        product("B000000002", "Ranged", "$5.00 to $15.00"),
        product("B000000003", "No price", None),
        product("B000000004", "Thousands", "$1,299.99"),
        product("B000000005", "Dashed range", "$20.00 - $30.00"),
    ]
    attributes = {
        "B000000001": {"attributes": ["long lasting"], "instruction": "i want a first thing",
                       "instruction_attributes": ["long lasting"]},
        "B000000004": {"attributes": ["heavy duty"], "instruction": "i need a big thing",
                       "instruction_attributes": ["heavy duty"]},
    }
    human = {"B000000001": [
        {"instruction": "Find the first thing please.", "instruction_attributes": ["long lasting"],
         "instruction_options": ["black | white"]},
        {"instruction": "no attributes named", "instruction_attributes": [], "instruction_options": []},
    ]}
    (tmp_path / "items_shuffle_1000.json").write_text(json.dumps(items))
    (tmp_path / "items_ins_v2_1000.json").write_text(json.dumps(attributes))
    (tmp_path / "items_human_ins.json").write_text(json.dumps(human))
    return tmp_path


def test_loader_applies_the_original_normalisation(official):
    products = load_catalog(resolve_files(str(official), "1000"), random.Random(233), with_human=True)
    assert [p.asin for p in products] == ["B000000001", "B000000002", "B000000003", "B000000004", "B000000005"]
    first = products[0]
    assert first.title == "First"  # the first of two duplicated ASINs is kept, in file order
    assert first.options == {"color": ["black | white"], "size": ["large", "x-large"]}  # None option dropped
    assert first.query == "widget" and first.description == "A fine thing." and first.bullet_points[0] == "Point one"
    assert (first.price_range, first.price_tag, first.price) == ([12.5], "$12.5", 12.5)
    assert first.attributes == ["long lasting"] and first.instruction == "i want a first thing"
    assert len(first.human_instructions) == 2
    ranged = products[1]
    assert ranged.price_range == [5.0, 15.0] and ranged.price_tag == "$5.0 to $15.0"
    # the only range drawn before it is none: its price is the state's first uniform draw
    assert ranged.price == random.Random(233).uniform(5.0, 15.0)
    assert ranged.attributes == [DUMMY_ATTRIBUTE] and ranged.instruction is None
    assert (products[2].price_range, products[2].price_tag) == ([100.0], "$100.0")
    assert products[3].price == 1299.99
    dashed = products[4]
    assert dashed.price_range == [20.0, 30.0] and 20.0 <= dashed.price <= 30.0


def test_prices_and_truncation(official):
    files = resolve_files(str(official), "1000")
    assert [p.asin for p in load_catalog(files, random.Random(0), num_products=2)] == ["B000000001"]
    a = [p.price for p in load_catalog(files, random.Random(7))]
    assert a == [p.price for p in load_catalog(files, random.Random(7))]
    assert a != [p.price for p in load_catalog(files, random.Random(8))]
    with pytest.raises(ValueError, match="unreadable price"):
        parse_price("$ free")


def test_bad_files_name_the_problem(official, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="has no items_shuffle.json"):
        resolve_files(str(official), "")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        resolve_files(str(tmp_path / "missing"))
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=DATA_ENV_VAR):
        resolve_files("official")
    monkeypatch.setenv(DATA_ENV_VAR, str(official))
    assert resolve_files("official").products == official / "items_shuffle_1000.json"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "items_shuffle_1000.json").write_text("[{")
    (broken / "items_ins_v2_1000.json").write_text("{}")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_catalog(resolve_files(str(broken)), random.Random(0))
    (broken / "items_shuffle_1000.json").write_text(json.dumps([{"asin": "B1", "pricing": "$3"}]))
    with pytest.raises(ValueError, match=r"product #0 \(B1\) is malformed"):
        load_catalog(resolve_files(str(broken)), random.Random(0))
    files = CatalogFiles(official / "items_shuffle_1000.json", official / "items_ins_v2_1000.json", None)
    with pytest.raises(FileNotFoundError, match="items_human_ins"):
        load_catalog(files, random.Random(0), with_human=True)


def test_price_ceiling_rule():
    # price 12.5: the first four multiples of 10 above it are 20, 30, 40, 50; the larger of two drawn
    uppers = {draw_ceiling(12.5, random.Random(s))[0] for s in range(200)}
    assert uppers == {30.0, 40.0, 50.0}
    upper, text = draw_ceiling(12.5, random.Random(1))
    assert text == f", and price lower than {upper:.2f} dollars"
    assert draw_ceiling(985.0, random.Random(0)) == (NO_CEILING, "")  # only 990 is above: no ceiling


def test_synthetic_goals_one_per_option_combination(official):
    products = load_catalog(resolve_files(str(official)), random.Random(233))
    goals = synthetic_goals(products, random.Random(0))
    first = [g for g in goals if g.asin == "B000000001"]
    assert len(first) == 2  # color (1 value) × size (2 values)
    assert [g.options for g in first] == [["black | white", "large"], ["black | white", "x-large"]]
    g = first[1]
    assert g.instruction.startswith("i want a first thing with color: black | white, and size: x-large, and price lower than ")
    assert g.attributes == ["long lasting"] and g.option_names == ["color", "size"]
    assert first[0].price_upper == first[1].price_upper  # one ceiling per product
    big = [g for g in goals if g.asin == "B000000004"]
    assert len(big) == 1 and big[0].options == [] and big[0].price_upper == NO_CEILING
    assert big[0].instruction == "i need a big thing"


def test_human_goals_and_reproducible_order(official):
    products = load_catalog(resolve_files(str(official)), random.Random(233), with_human=True)
    goals = human_goals(products, random.Random(0))
    assert len(goals) == 1  # the instruction naming no attribute is skipped
    assert goals[0].instruction.startswith("Find the first thing please, and price lower than")
    assert goals[0].options == ["black | white"]

    def order(seed):
        rng = random.Random(seed)
        prods = load_catalog(resolve_files(str(SYNTHETIC_DIR.parent / SYNTHETIC_DIR.name), "synthetic"), rng)
        return [(g.asin, g.instruction) for g in build_goals(prods, rng, seed)]

    assert order(233) == order(233) and order(233) != order(234)
    with pytest.raises(ValueError, match="goals"):
        build_goals(products, random.Random(0), 0, kind="mixed")


def test_bundled_catalog_is_what_the_script_writes(tmp_path):
    for path in write(tmp_path):
        assert path.read_bytes() == (SYNTHETIC_DIR / path.name).read_bytes(), path.name
    products = load_catalog(resolve_files("synthetic"), random.Random(233), with_human=True)
    assert len(products) >= 300 and len({p.category for p in products}) == 5
    assert any(len(p.price_range) == 2 for p in products) and any(p.options for p in products)
    assert any(not p.options for p in products)
    assert len(human_goals(products, random.Random(0))) >= 40
