"""The novelty table behind the intrinsic reward (EMPO2.md §5).

Why sequential: n_t counts the *stored* states similar to state t, and a state is stored only when
nothing similar was (n_t = 1). So the order in which states are scored matters; states are scored
in a fixed order (episodes in rollout order, steps in time order) so that every rank, given the
same gathered states, computes the same table and the same rewards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from empo2.slot_table import SlotStore, SlotTable


class NoveltyTable(SlotStore):
    def __init__(self, folder: str | Path, threshold: float = 0.9) -> None:
        self.table = SlotTable(folder, "novelty")
        self.threshold = threshold

    def count(self, slots: list[str], keys: np.ndarray, write: bool = True) -> list[int]:
        """n_t = 1 + #stored states of the slot with cosine > threshold, for each state in order;
        states with n_t = 1 are stored (and count for the states after them)."""
        added: dict[str, list[np.ndarray]] = {}
        counts: list[int] = []
        new_slots, new_keys = [], []
        for slot, key in zip(slots, keys):
            stored = self.table.rows(slot).keys
            n = 1 + int(np.sum(stored @ key > self.threshold))
            extra = added.get(slot)
            if extra:
                n += int(np.sum(np.stack(extra) @ key > self.threshold))
            counts.append(n)
            if n == 1:
                added.setdefault(slot, []).append(key)
                new_slots.append(slot)
                new_keys.append(key)
        if new_slots:
            keys_arr = np.stack(new_keys).astype(np.float32)
            self.table.add(new_slots, keys_arr, [""] * len(new_slots), [0.0] * len(new_slots), persist=write)
        return counts

