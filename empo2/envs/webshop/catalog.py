"""The WebShop product catalog: the official JSON files read with the original's normalisation.

Why reproduce the loader rule by rule: scores are only comparable with published WebShop numbers
when the agent shops in the same store. The original keeps products in file order, skips ASINs
that are 'nan' or longer than 10 characters, keeps the first of duplicated ASINs, parses prices
from "$x" or "$x to $y" (any text with one or two "$" amounts; missing → $100.0), lower-cases
option names, strips and lower-cases option values and writes "/" as " | ", and takes attributes
from the attribute file (a placeholder attribute where a product has none). A product priced as a
range is sold at one price drawn uniformly from it, once, when the catalog loads; the draws come
from the caller's random state (seeded), so the store is the same on every run.

Files (ENVIRONMENTS.md, WebShop): `items_shuffle{_1000}.json` (products, a list),
`items_ins_v2{_1000}.json` (asin → attributes and a synthetic instruction),
`items_human_ins.json` (asin → human-written instructions). The bundled synthetic catalog
(`python -m empo2.envs.webshop.synthetic`) uses the same schema.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

DATA_ENV_VAR = "EMPO2_WEBSHOP_DATA"
"""Environment variable naming the folder with the official files (`data_dir: official`)."""
SYNTHETIC_DIR = Path(__file__).with_name("synthetic_catalog")
DUMMY_ATTRIBUTE = "DUMMY_ATTR"
DEFAULT_PRICE = 100.0


@dataclass
class Product:
    asin: str
    title: str
    """The product's `name`."""
    query: str
    """The search query the product was collected under (lower-cased, stripped)."""
    category: str
    """Top-level category (beauty, electronics, ...)."""
    product_category: str
    """Category path, levels separated by "›"."""
    description: str
    """`full_description`."""
    bullet_points: list[str]
    """`small_description` (the item page's Features)."""
    price_range: list[float]
    """One price, or [low, high]."""
    price_tag: str
    """The price as the pages show it: "$x" or "$x to $y"."""
    price: float
    """The price the product sells at (drawn from the range once)."""
    options: dict[str, list[str]]
    """Option name → values, normalised."""
    attributes: list[str]
    """Attributes from the attribute file (or the placeholder)."""
    reviews: list[str] = field(default_factory=list)
    rating: str = "N.A."
    instruction: Optional[str] = None
    """Synthetic instruction from the attribute file."""
    instruction_attributes: list[str] = field(default_factory=list)
    human_instructions: list[dict[str, Any]] = field(default_factory=list)
    """Entries of the human-instruction file for this product."""


def parse_price(pricing: Any) -> tuple[list[float], str]:
    """"$x" → ([x], "$x"); "$x to $y" (or any text with two "$" amounts) → ([x, y], "$x to $y");
    missing or empty → ([100.0], "$100.0"). Thousands separators are ignored."""
    if not pricing:
        return [DEFAULT_PRICE], f"${DEFAULT_PRICE}"
    values = []
    for part in str(pricing).split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", part)
        if digits.count(".") > 1 or not re.search(r"\d", digits):
            raise ValueError(f"unreadable price {pricing!r}")
        values.append(float(digits))
    if not values:
        raise ValueError(f"unreadable price {pricing!r}")
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


def normalise_options(raw: Any) -> dict[str, list[str]]:
    """Option name lower-cased; each value stripped, lower-cased, "/" written as " | "."""
    options: dict[str, list[str]] = {}
    for name, contents in (raw or {}).items():
        if contents is None:
            continue
        options[name.lower()] = [str(c["value"]).strip().replace("/", " | ").lower() for c in contents]
    return options


def _bullets(raw: Any) -> list[str]:
    if raw is None:
        return []
    return [str(x) for x in raw] if isinstance(raw, list) else [str(raw)]


def _read_json(path: Path, what: str) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"WebShop {what} file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"WebShop {what} file {path} is not valid JSON: {err}") from None


@dataclass
class CatalogFiles:
    products: Path
    attributes: Path
    human: Optional[Path]


def resolve_files(data_dir: str, variant: str = "1000") -> CatalogFiles:
    """The files in `data_dir`: a folder, `official` (the folder named by $EMPO2_WEBSHOP_DATA) or
    `synthetic` (the bundled catalog). `variant` picks `items_shuffle_<variant>.json` and
    `items_ins_v2_<variant>.json` (`""`: the full `items_shuffle.json`, `items_ins_v2.json`)."""
    if data_dir == "official":
        if not os.environ.get(DATA_ENV_VAR):
            raise FileNotFoundError(
                f"env.options.data_dir: 'official' reads the folder named by ${DATA_ENV_VAR}, which is not set "
                "(point it at the folder holding items_shuffle_1000.json, items_ins_v2_1000.json, items_human_ins.json)"
            )
        data_dir = os.environ[DATA_ENV_VAR]
    if data_dir == "synthetic":
        folder, variant = SYNTHETIC_DIR, "synthetic"
    else:
        folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"env.options.data_dir: {folder} is not a folder (WebShop data)")
    suffix = f"_{variant}" if variant else ""
    products, attributes = folder / f"items_shuffle{suffix}.json", folder / f"items_ins_v2{suffix}.json"
    for path in (products, attributes):
        if not path.is_file():
            found = sorted(p.name for p in folder.glob("items_*.json"))
            raise FileNotFoundError(
                f"env.options.data_dir: {folder} has no {path.name} (variant {variant!r}); it holds {found}. "
                "Set env.options.variant to match (e.g. '1000' or '' for the full catalog)."
            )
    human = next(iter(sorted(folder.glob("items_human_ins*.json"))), None)
    return CatalogFiles(products, attributes, human)


def load_catalog(files: CatalogFiles, rng: random.Random, num_products: Optional[int] = None,
                 with_human: bool = False) -> list[Product]:
    """Products in file order, normalised as the original loader does (see the module docstring).

    `rng` draws the selling price of products priced as a range, in catalog order."""
    raw = _read_json(files.products, "products")
    if not isinstance(raw, list):
        raise ValueError(f"WebShop products file {files.products} must hold a list of products")
    attributes = _read_json(files.attributes, "attributes")
    human: dict[str, Any] = {}
    if with_human:
        if files.human is None:
            raise FileNotFoundError(f"env.options.goals=human needs items_human_ins.json next to {files.products}")
        human = _read_json(files.human, "human instructions")
    if num_products is not None:
        raw = raw[:num_products]
    seen: set[str] = set()
    products: list[Product] = []
    for i, p in enumerate(raw):
        asin = str(p.get("asin", "nan"))
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        try:
            price_range, tag = parse_price(p.get("pricing"))
            attr = attributes.get(asin) or {}
            products.append(Product(
                asin=asin, title=str(p["name"]), query=str(p.get("query", "")).lower().strip(),
                category=str(p.get("category", "")), product_category=str(p.get("product_category", "")),
                description=str(p.get("full_description") or ""), bullet_points=_bullets(p.get("small_description")),
                price_range=price_range, price_tag=tag, price=0.0,
                options=normalise_options(p.get("customization_options")),
                attributes=list(attr.get("attributes") or [DUMMY_ATTRIBUTE]),
                instruction=attr.get("instruction"), instruction_attributes=list(attr.get("instruction_attributes") or []),
                human_instructions=list(human.get(asin) or []),
            ))
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"WebShop products file {files.products}: product #{i} ({asin}) is malformed: {err!r}") from None
    for product in products:  # the selling price: drawn after loading, in catalog order
        lo = product.price_range[0]
        product.price = lo if len(product.price_range) == 1 else rng.uniform(lo, product.price_range[1])
    return products
