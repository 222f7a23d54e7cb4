"""Novelty counts n_t and r_int = coef / n_t (EMPO2.md §5) against hand-worked sequences."""

import numpy as np

from empo2.embedder import DIM
from empo2.novelty import NoveltyTable


def vec(*xy):
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(xy)] = xy
    return v / np.linalg.norm(v)


def test_counts_by_hand(tmp_path):
    t = NoveltyTable(tmp_path, threshold=0.9)
    a, a2, b = vec(1, 0), vec(1, 0.1), vec(0, 1)  # cos(a, a2) = 0.995 > 0.9; cos(a, b) = 0
    # a: nothing stored -> n=1, stored; a2: similar to a -> n=2, not stored; b: n=1, stored;
    # a again: n=2; b in another slot: n=1
    assert t.count(["s", "s", "s", "s", "u"], np.stack([a, a2, b, a, b])) == [1, 2, 1, 2, 1]
    assert t.counts() == {"s": 2, "u": 1}
    rewards = [1.0 / n for n in [1, 2, 1, 2, 1]]  # coef 1
    assert rewards == [1.0, 0.5, 1.0, 0.5, 1.0]
    # persisted: a new process sees the same table
    again = NoveltyTable(tmp_path, threshold=0.9)
    assert again.count(["s"], a[None]) == [2]


def test_similar_states_counted_against_all_stored(tmp_path):
    t = NoveltyTable(tmp_path, threshold=0.5)
    x, y = vec(1, 0), vec(0, 1)
    z = vec(1, 1)  # cos 0.707 with both
    assert t.count(["s", "s", "s"], np.stack([x, y, z])) == [1, 1, 3]


def test_non_writing_rank_keeps_the_same_snapshot(tmp_path):
    writer, reader = NoveltyTable(tmp_path / "w"), NoveltyTable(tmp_path / "r")
    keys = np.stack([vec(1, 0), vec(0, 1), vec(1, 0)])
    assert writer.count(["s"] * 3, keys) == reader.count(["s"] * 3, keys, write=False) == [1, 1, 2]
    assert reader.count(["s"], keys[:1], write=False) == writer.count(["s"], keys[:1]) == [2]
    assert NoveltyTable(tmp_path / "r").counts() == {}  # nothing written on disk by the reader
