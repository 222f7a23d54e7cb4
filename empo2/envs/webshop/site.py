"""The shop's pages in text form: what each page shows, what can be clicked, where a click leads.

Why a state machine of our own: the original serves HTML pages from a Flask app and turns them
into text; an agent only ever sees that text and the list of clickable labels. This class keeps
the same pages, labels and transitions (ENVIRONMENTS.md, WebShop) without a web server:

    search ──search[q]──▶ results (page 1..5) ──click[asin]──▶ item ──click[description|features|reviews]──▶ sub-page
      ▲                     │ next > / < prev                   │ option values select; < prev → results
      └──── back to search ─┴───────────────────────────────────┴── buy now → done (the episode ends)

Every page but the search page starts with the instruction and offers `back to search`; a
sub-page's `< prev` returns to its item with the selected options kept. Observations are the
visible strings joined by " [SEP] "; clickables are lower-cased. An action that names no
clickable on the current page (or a search away from the search page) changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from empo2.envs.webshop.catalog import Product

if TYPE_CHECKING:
    from empo2.envs.webshop.search import ProductSearch

SEP = " [SEP] "
PER_PAGE = 10
SUB_PAGES = ("description", "features", "reviews")
ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)


def parse_command(action: str) -> tuple[str, str] | None:
    """`search[q]` / `click[label]` → (verb, argument lower-cased and stripped), else None."""
    m = ACTION.match(action or "")
    if m is None:
        return None
    return m.group(1).lower(), m.group(2).strip().lower()


@dataclass
class Purchase:
    product: Product
    options: dict[str, str]


@dataclass
class SiteState:
    page: str = "search"
    """search, results, item, description, features, reviews or done."""
    results: list[str] = field(default_factory=list)
    page_number: int = 1
    asin: str = ""
    options: dict[str, str] = field(default_factory=dict)


class WebShopSite:
    def __init__(self, products: dict[str, Product], search: "ProductSearch") -> None:
        self.products, self.engine = products, search
        self.instruction = ""
        self.state = SiteState()

    def start(self, instruction: str) -> None:
        self.instruction, self.state = instruction, SiteState()

    # ------------------------------------------------------------------ what the agent sees
    @property
    def has_search_bar(self) -> bool:
        return self.state.page == "search"

    def clickables(self) -> list[str]:
        s = self.state
        if s.page == "results":
            labels = ["back to search"]
            labels += ["< prev"] if s.page_number > 1 else []
            labels += ["next >"] if s.page_number * PER_PAGE < len(s.results) else []
            return labels + [a.lower() for a in self._page_asins()]
        if s.page == "item":
            values = [v for vs in self.products[s.asin].options.values() for v in vs]
            return ["back to search", "< prev", *values, *SUB_PAGES, "buy now"]
        if s.page in SUB_PAGES:
            return ["back to search", "< prev"]
        return []

    def observation(self) -> str:
        s = self.state
        head = ["Instruction:", self.instruction]
        if s.page == "search":
            return SEP.join(["WebShop", *head, "Search"])
        if s.page == "results":
            parts = [*head, "Back to Search", f"Page {s.page_number} (Total results: {len(s.results)})"]
            parts += ["< Prev"] if s.page_number > 1 else []
            parts += ["Next >"] if s.page_number * PER_PAGE < len(s.results) else []
            for asin in self._page_asins():
                p = self.products[asin]
                parts += [asin, p.title, p.price_tag]
            return SEP.join(parts)
        p = self.products[s.asin]
        if s.page == "item":
            parts = [*head, "Back to Search", "< Prev"]
            for name, values in p.options.items():
                parts += [name, *values]
            parts += [p.title, f"Price: {p.price_tag}", f"Rating: {p.rating}", "Description", "Features", "Reviews",
                      "Buy Now"]
            return SEP.join(parts)
        if s.page in SUB_PAGES:
            body = {"description": [p.description], "features": p.bullet_points, "reviews": p.reviews}[s.page]
            return SEP.join([*head, "Back to Search", "< Prev", *[b for b in body if b]])
        chosen = [f"{k}: {v}" for k, v in s.options.items()]
        return SEP.join(["Thank you for shopping with us!", "Purchased", p.asin, p.title, *chosen])

    def _page_asins(self) -> list[str]:
        start = (self.state.page_number - 1) * PER_PAGE
        return self.state.results[start:start + PER_PAGE]

    # ------------------------------------------------------------------ transitions
    def act(self, action: str) -> tuple[bool, Optional[Purchase]]:
        """Apply `action`; (whether it did something, the purchase if it was Buy Now)."""
        command = parse_command(action)
        if command is None or self.state.page == "done":
            return False, None
        verb, arg = command
        if verb == "search":
            if not self.has_search_bar or not arg:
                return False, None
            s = self.state
            s.page, s.results, s.page_number = "results", self.engine.search(arg), 1
            return True, None
        if arg not in self.clickables():
            return False, None
        return True, self._click(arg)

    def _click(self, label: str) -> Optional[Purchase]:
        s = self.state
        if label == "back to search":
            self.state = SiteState()
        elif s.page == "results":
            if label == "next >":
                s.page_number += 1
            elif label == "< prev":
                s.page_number -= 1
            else:
                s.page, s.asin, s.options = "item", next(a for a in self._page_asins() if a.lower() == label), {}
        elif s.page == "item":
            if label == "< prev":
                s.page = "results"
            elif label in SUB_PAGES:
                s.page = label
            elif label == "buy now":
                s.page = "done"
                return Purchase(self.products[s.asin], dict(s.options))
            else:  # an option value: select it under its option name (the first that offers it)
                name = next(n for n, vs in self.products[s.asin].options.items() if label in vs)
                s.options[name] = label
        elif s.page in SUB_PAGES and label == "< prev":
            s.page = "item"
        return None
