"""WebShop: a text shopping environment compatible with the original's pages, search and reward.

Modules: `catalog` (the official JSON files and their normalisation), `goals` (synthetic and
human-written goals), `search` (BM25 with bm25s), `site` (pages and transitions), `reward` (the
purchase reward), `prompt` (EMPO2.md §3.4), `env` (the `TextEnv`), `synthetic` (the committed
generator of the bundled catalog).
"""

from empo2.envs.webshop.env import WebShopEnv

__all__ = ["WebShopEnv"]
