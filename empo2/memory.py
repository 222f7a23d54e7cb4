"""The tip memory (EMPO2.md §4): what the agent wrote about its own episodes, per slot.

Why these rules: retrieval must surface *useful* tips for the current state, so entries are keyed by
the state they were written for, filtered by similarity (cos > 0.5), and ranked by the score of the
episode that wrote them, best first (ties: oldest first), at most 10. A slot (task + variation)
never sees another slot's tips. Identical content is stored once; each slot holds at most 1000
entries, oldest dropped first.

    python -m empo2.memory RUN_DIR                 # slots and their entry counts
    python -m empo2.memory RUN_DIR --slot find/3   # the best tips of one slot
    python -m empo2.memory RUN_DIR --sample 8      # what the tips say: a summary and 8 random entries
"""

from __future__ import annotations

import argparse
from collections import deque
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from empo2.slot_table import SlotStore, SlotTable

TABLE = "memory"


@dataclass
class Tip:
    content: str
    score: float
    similarity: float
    step: int


ACTION_MARK = "; the action at that step was "


def entry_content(tip: str, action: str, episode_return: float) -> str:
    """EMPO2.md §4: one entry per step, T + the step's action + the episode's final score."""
    return f"{tip}{ACTION_MARK}{action}; the episode ended with score {episode_return:.1f}/100"


def entry_tip(content: str) -> str:
    """The agent's own words in an entry: what `entry_content` wrote before the step's action."""
    return content.rsplit(ACTION_MARK, 1)[0]


@dataclass
class MemorySummary:
    """What a memory holds, in numbers a reader can compare across runs."""

    entries: int
    slots: int
    scoring_share: float
    """Share of entries written in episodes whose final score was above 0."""
    distinct_tips: int
    """Distinct tip texts (the agent's words only): one tip is stored with every step of its episode."""
    mean_tip_words: float


def summarise_memory(contents: list[str], scores: list[float], slots: int) -> MemorySummary:
    if not contents:
        return MemorySummary(0, slots, 0.0, 0, 0.0)
    tips = [entry_tip(c) for c in contents]
    n = len(contents)
    return MemorySummary(n, slots, sum(s > 0 for s in scores) / n, len(set(tips)),
                         sum(len(t.split()) for t in tips) / n)


def rank(sims: np.ndarray, scores: np.ndarray, steps: np.ndarray, threshold: float, top_k: int) -> list[int]:
    """Indices kept by the retrieval rule: sim > threshold, by score descending, ties oldest first."""
    keep = np.flatnonzero(sims > threshold)
    order = sorted(keep.tolist(), key=lambda i: (-scores[i], steps[i]))
    return order[:top_k]


class MemoryStore(SlotStore):
    def __init__(self, folder: str | Path, threshold: float = 0.5, top_k: int = 10, capacity: int = 1000) -> None:
        self.table = SlotTable(folder, TABLE)
        self.threshold, self.top_k, self.capacity = threshold, top_k, capacity

    def retrieve(self, slots: list[str], keys: np.ndarray) -> list[list[Tip]]:
        """Tips for each (slot, query key) pair."""
        out: list[list[Tip]] = []
        for slot, key in zip(slots, keys):
            r = self.table.rows(slot)
            if not len(r):
                out.append([])
                continue
            sims = r.keys @ key
            idx = rank(sims, r.scores, r.steps, self.threshold, self.top_k)
            out.append([Tip(r.contents[i], float(r.scores[i]), float(sims[i]), int(r.steps[i])) for i in idx])
        return out

    def write(self, slots: list[str], keys: np.ndarray, contents: list[str], scores: list[float]) -> int:
        """Store entries as if inserted one at a time, in order: an entry whose content is in its
        slot at that moment is skipped, otherwise it is appended and the slot's oldest entry leaves
        once the slot is over capacity (FIFO). One table write and one delete do it all. Returns
        the number of entries stored."""
        window = {slot: deque(self.table.rows(slot).contents) for slot in set(slots)}
        keep = []
        for i, (slot, content) in enumerate(zip(slots, contents)):
            slot_now = window[slot]
            if content not in slot_now:
                slot_now.append(content)
                if len(slot_now) > self.capacity:
                    slot_now.popleft()
                keep.append(i)
        self.table.add([slots[i] for i in keep], keys[keep], [contents[i] for i in keep], [scores[i] for i in keep])
        self.table.drop_oldest(self.capacity)
        return len(keep)

    def best(self, slot: str, k: int = 10) -> list[Tip]:
        """The slot's entries by score (what retrieval would favour), regardless of similarity."""
        r = self.table.rows(slot)
        idx = rank(np.ones(len(r)), r.scores, r.steps, 0.0, k)
        return [Tip(r.contents[i], float(r.scores[i]), 1.0, int(r.steps[i])) for i in idx]


def memory_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "memory"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m empo2.memory", description="Inspect a run's tip memory.")
    ap.add_argument("run_dir")
    ap.add_argument("--slot", help="show this slot's best tips")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--sample", type=int, metavar="K", help="summarise every entry and show K drawn at random")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample's draw")
    args = ap.parse_args(argv)
    folder = memory_dir(args.run_dir)
    if not (folder / f"{TABLE}.lance").is_dir():
        print(f"no memory in {args.run_dir} (expected {folder}/{TABLE}.lance)")
        return 1
    store = MemoryStore(folder)
    counts = store.counts()
    if args.sample is not None:
        rows = []
        for slot in counts:
            r = store.table.rows(slot)
            rows += [(slot, c, float(sc)) for c, sc in zip(r.contents, r.scores)]
        m = summarise_memory([c for _, c, _ in rows], [sc for _, _, sc in rows], len(counts))
        print(f"{m.entries} entries in {m.slots} slots; {m.scoring_share:.0%} written in episodes that scored > 0; "
              f"{m.distinct_tips} distinct tips, {m.mean_tip_words:.1f} words each on average")
        for slot, content, score in random.Random(args.seed).sample(rows, min(args.sample, len(rows))):
            print(f"[{score:7.1f}] {slot}: {content}")
        return 0
    if args.slot is None:
        print(f"{sum(counts.values())} entries in {len(counts)} slots (table version {store.version})")
        for slot, n in counts.items():
            print(f"  {slot:40s} {n:6d}")
        return 0
    if args.slot not in counts:
        print(f"unknown slot {args.slot!r}; slots: {', '.join(counts) or 'none'}")
        return 1
    for tip in store.best(args.slot, args.top):
        print(f"[{tip.score:7.1f}] #{tip.step}: {tip.content}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
