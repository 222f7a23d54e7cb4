"""`python -m empo2.envs.webshop.synthetic [OUT_DIR]`: write the bundled synthetic catalog.

Why a synthetic catalog: the official product files cannot be fetched on our machines, yet tests,
the CPU demo and the default config need a store. This script writes one in the official schema
(so the same loader, goals, search and reward run on it): 19 product types over the five
original categories, 16 products each, with category paths, attributes, options (names and values
in mixed case, some with "/"), single prices and price ranges, a synthetic instruction per
product, and human-style instructions for every fourth product. Everything comes from one seeded
random state, so the files are byte-for-byte reproducible (a test regenerates and compares them).

Results on this catalog are NOT comparable with published WebShop numbers: it is smaller, its
products are templated and its instructions are easier to match.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from empo2.envs.webshop.catalog import SYNTHETIC_DIR

SEED = 2026
PER_TYPE = 16
BRANDS = ("Alder", "Brightfield", "Corvo", "Dunmore", "Everly", "Fennick", "Galloway", "Harbor & Pine", "Islay",
          "Juniper Lane", "Kestrel", "Lumora", "Marlowe", "Northwind", "Oakhurst", "Pellucid")
STYLES = ("Classic", "Premium", "Everyday", "Essential", "Deluxe", "Compact", "Signature", "Pro")

# category, query, category path, noun in titles, attribute pool, options {name: values}, price range
TYPES = [
    ("beauty", "shampoo", "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos", "Shampoo",
     ["sulfate free", "paraben free", "natural ingredients", "dry hair", "color treated hair", "tea tree oil"],
     {"Size": ["8 Fl Oz", "16 Fl Oz", "32 Fl Oz"], "Scent": ["Lavender", "Coconut", "Unscented", "Tea Tree"]}, (6, 30)),
    ("beauty", "face moisturizer", "Beauty & Personal Care › Skin Care › Face › Creams & Moisturizers",
     "Face Moisturizer", ["oil free", "fragrance free", "sensitive skin", "hyaluronic acid", "non greasy"],
     {"Size": ["1.7 Oz", "3.4 Oz"]}, (9, 45)),
    ("beauty", "lipstick", "Beauty & Personal Care › Makeup › Lips › Lipstick", "Lipstick",
     ["long lasting", "cruelty free", "matte finish", "vegan", "moisturizing"],
     {"Color": ["Ruby Red", "Nude Pink", "Berry/Plum", "Coral", "Mauve"]}, (5, 25)),
    ("beauty", "deodorant", "Beauty & Personal Care › Personal Care › Deodorants & Antiperspirants › Deodorants",
     "Deodorant", ["aluminum free", "natural ingredients", "long lasting", "baking soda free", "travel size"],
     {"Scent": ["Citrus", "Cedar", "Unscented", "Rose"], "Size": ["Pack of 1", "Pack of 3"]}, (4, 18)),
    ("electronics", "headphones", "Electronics › Headphones, Earbuds & Accessories › Headphones › Over-Ear Headphones",
     "Headphones", ["noise cancelling", "wireless bluetooth", "long battery life", "built-in microphone", "foldable design"],
     {"Color": ["Black", "White", "Navy Blue", "Rose Gold"]}, (19, 150)),
    ("electronics", "phone case", "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases", "Phone Case",
     ["shockproof", "slim fit", "wireless charging compatible", "anti scratch", "card holder"],
     {"Color": ["Black", "Clear", "Midnight Green", "Lilac/Purple"], "Size": ["6.1 Inch", "6.7 Inch"]}, (7, 30)),
    ("electronics", "usb charger", "Electronics › Accessories & Supplies › Chargers & Adapters › Wall Chargers",
     "USB Wall Charger", ["fast charging", "dual port", "foldable plug", "compact size", "overheat protection"],
     {"Color": ["White", "Black"], "Style": ["20W", "35W", "65W"]}, (9, 45)),
    ("electronics", "hdmi cable", "Electronics › Accessories & Supplies › Audio & Video Accessories › Cables › HDMI Cables",
     "HDMI Cable", ["4k resolution", "gold plated", "high speed", "braided cord"],
     {"Size": ["3 Feet", "6 Feet", "10 Feet"], "Pack": ["1 Pack", "2 Pack"]}, (5, 25)),
    ("fashion", "running shoes", "Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running", "Running Shoes",
     ["rubber sole", "breathable mesh", "lightweight", "arch support", "non slip"],
     {"Color": ["Black/White", "Grey", "Navy", "Red"], "Size": ["8", "9", "10", "11"]}, (30, 120)),
    ("fashion", "t-shirt", "Clothing, Shoes & Jewelry › Women › Clothing › Tops, Tees & Blouses › T-Shirts", "T-Shirt",
     ["machine wash", "cotton blend", "relaxed fit", "short sleeve", "moisture wicking"],
     {"Color": ["White", "Heather Grey", "Olive Green", "Dusty Pink"], "Size": ["Small", "Medium", "Large", "X-Large"]},
     (8, 35)),
    ("fashion", "jeans", "Clothing, Shoes & Jewelry › Men › Clothing › Jeans", "Jeans",
     ["slim fit", "stretch denim", "machine wash", "button closure"],
     {"Color": ["Dark Wash", "Light Wash", "Black"], "Size": ["30W x 30L", "32W x 32L", "34W x 32L"]}, (20, 70)),
    ("fashion", "laptop backpack", "Clothing, Shoes & Jewelry › Luggage & Travel Gear › Backpacks › Laptop Backpacks",
     "Laptop Backpack", ["water resistant", "laptop compartment", "usb charging port", "padded straps"],
     {"Color": ["Black", "Charcoal Grey", "Forest Green", "Navy Blue"]}, (18, 80)),
    ("food", "ground coffee", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee › Ground Coffee",
     "Ground Coffee", ["medium roast", "fair trade", "organic", "low acid"],
     {"Size": ["12 Ounce", "2 Pound"], "Flavor Name": ["Original", "Hazelnut", "French Vanilla"]}, (7, 30)),
    ("food", "protein bars", "Grocery & Gourmet Food › Snacks & Sweets › Snack Bars › Protein Bars", "Protein Bars",
     ["gluten free", "high protein", "low sugar", "non gmo", "keto friendly"],
     {"Flavor Name": ["Chocolate Peanut Butter", "Almond Coconut", "Mixed Berry"], "Size": ["12 Count", "24 Count"]},
     (10, 40)),
    ("food", "green tea", "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Green", "Green Tea Bags",
     ["decaffeinated", "organic", "individually wrapped", "no artificial flavors"],
     {"Flavor Name": ["Jasmine", "Mint", "Lemon Ginger"], "Size": ["20 Count", "100 Count"]}, (4, 20)),
    ("furniture", "office chair",
     "Home & Kitchen › Furniture › Home Office Furniture › Home Office Chairs › Home Office Desk Chairs", "Office Chair",
     ["lumbar support", "adjustable height", "easy assembly", "breathable mesh", "heavy duty"],
     {"Color": ["Black", "Grey", "White"]}, (60, 250)),
    ("furniture", "bookshelf", "Home & Kitchen › Furniture › Living Room Furniture › Bookcases", "Bookshelf",
     ["easy assembly", "solid wood", "space saving", "anti tip"],
     {"Color": ["Walnut", "White", "Espresso Brown"], "Size": ["3-Tier", "5-Tier"]}, (35, 160)),
    ("furniture", "throw pillow covers",
     "Home & Kitchen › Home Décor Products › Decorative Pillows, Inserts & Covers › Throw Pillow Covers",
     "Throw Pillow Covers", ["machine washable", "hidden zipper", "soft velvet", "double sided"],
     {"Color": ["Mustard Yellow", "Teal", "Blush Pink", "Cream/Beige"], "Size": ["18 x 18 Inch", "20 x 20 Inch"]},
     (8, 28)),
    ("furniture", "table lamp", "Tools & Home Improvement › Lighting & Ceiling Fans › Lamps & Shades › Table Lamps",
     "Table Lamp", ["dimmable", "usb port", "touch control", "energy efficient"],
     {"Color": ["Black", "White", "Brass Gold"]}, (15, 70)),
]

INSTRUCTIONS = (
    "i am looking for {article} {query} that is {attrs}",
    "i need {article} {query}, {attrs}",
    "find me {article} {query} which is {attrs}",
    "i want to buy {article} {query} that is {attrs}",
)
HUMAN = (
    "I'd like {article} {query} that is {attrs}. I prefer {opts}.",
    "Please get me {article} {query}: {attrs}, in {opts}",
    "Shopping for {article} {query} ({attrs}); it should be {opts}.",
)


def _article(query: str) -> str:
    if query.endswith("s") and not query.endswith("ss"):
        return "some"
    return "an" if query[0] in "aeiou" else "a"


def _price(rng: random.Random, lo: float, hi: float) -> str:
    low = round(rng.uniform(lo, hi), 2)
    if rng.random() < 0.25:  # a price range, as variant listings show
        return f"${low:.2f} to ${low * rng.uniform(1.1, 1.6):.2f}"
    return f"${low:.2f}"


def generate(seed: int = SEED) -> tuple[list[dict], dict[str, dict], dict[str, list[dict]]]:
    """(products, attributes by ASIN, human instructions by ASIN)."""
    rng = random.Random(seed)
    products, attributes, human = [], {}, {}
    n = 0
    for category, query, path, noun, pool, option_pool, (lo, hi) in TYPES:
        for _ in range(PER_TYPE):
            n += 1
            asin = f"B0SYN{n:05d}"
            brand, style = rng.choice(BRANDS), rng.choice(STYLES)
            attrs = rng.sample(pool, rng.randint(2, min(4, len(pool))))
            named = rng.sample(attrs, rng.randint(1, 2))
            option_names = rng.sample(sorted(option_pool), rng.randint(0, len(option_pool)))
            options = {name: [{"value": v, "image": None} for v in
                              rng.sample(option_pool[name], rng.randint(2, min(3, len(option_pool[name]))))]
                       for name in option_names}
            in_title = ", ".join(a.title() for a in attrs[:rng.randint(1, 2)])
            title = f"{brand} {style} {noun}, {in_title}"
            extra = rng.choice([a for a in pool if a not in attrs] or attrs)  # described but not listed
            products.append({
                "asin": asin, "category": category, "query": query, "name": title, "product_category": path,
                "full_description": (f"The {style.lower()} {noun.lower()} from {brand}. Key features: {', '.join(attrs)}. "
                                     f"Reviewers also mention: {extra}."),
                "small_description": [f"{a.upper()} - a {brand} {noun.lower()} designed with this in mind." for a in attrs],
                "pricing": _price(rng, lo, hi), "images": [], "customization_options": options,
                "average_rating": round(rng.uniform(3.0, 5.0), 1), "total_reviews": rng.randint(0, 900),
            })
            art = _article(query)
            attributes[asin] = {
                "attributes": attrs, "instruction_attributes": named,
                "instruction": rng.choice(INSTRUCTIONS).format(article=art, query=query, attrs=" and ".join(named)),
            }
            if n % 4 == 0 and options:
                chosen = [rng.choice(vals)["value"].lower() for vals in options.values()]
                human[asin] = [{
                    "asin": asin, "instruction_attributes": named, "instruction_options": chosen,
                    "instruction": rng.choice(HUMAN).format(article=art, query=query, attrs=" and ".join(named),
                                                            opts=" and ".join(chosen)),
                }]
    return products, attributes, human


def _dump_list(items: list[dict]) -> str:
    return "[\n" + ",\n".join(json.dumps(p, ensure_ascii=False) for p in items) + "\n]\n"


def _dump_map(items: dict) -> str:
    return "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in items.items()) + "\n}\n"


def write(out_dir: Path = SYNTHETIC_DIR, seed: int = SEED) -> list[Path]:
    products, attributes, human = generate(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"items_shuffle_synthetic.json": _dump_list(products), "items_ins_v2_synthetic.json": _dump_map(attributes),
             "items_human_ins_synthetic.json": _dump_map(human)}
    paths = []
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        paths.append(out_dir / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else SYNTHETIC_DIR
    for path in write(out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
