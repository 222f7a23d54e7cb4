"""A versioned LanceDB table of vectors partitioned by slot, with an in-RAM snapshot for reads.

Why both: LanceDB (embedded, on disk in the run directory) is the durable, versioned store: a
checkpoint records `version`, and `restore(version)` brings back exactly that state, so rows written
after a checkpoint never leak into a resumed run. Reads on the hot path (every rollout step) go to
a numpy snapshot of the same rows instead, refreshed from the table after each write phase (and
by every rank, so all ranks read the same memory). At ≤ 1000 rows a slot a flat scan is all the
index needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from empo2.embedder import DIM


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class SlotRows:
    keys: np.ndarray = field(default_factory=lambda: np.zeros((0, DIM), dtype=np.float32))
    contents: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.contents)


class SlotTable:
    """Rows (slot, key, content, score, step); `step` is a global insertion counter."""

    def __init__(self, folder: str | Path, name: str) -> None:
        import lancedb

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(str(self.folder))
        schema = pa.schema([
            ("slot", pa.string()), ("key", pa.list_(pa.float32(), DIM)), ("content", pa.string()),
            ("score", pa.float64()), ("step", pa.int64()),
        ])
        self.table = self.db.create_table(name, schema=schema, exist_ok=True)
        self.slots: dict[str, SlotRows] = {}
        self.next_step = 0
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def version(self) -> int:
        return int(self.table.version)

    def refresh(self) -> None:
        """Reload the snapshot from the table's latest version."""
        self.table.checkout_latest()
        data = self.table.to_arrow()
        self.slots = {}
        if data.num_rows == 0:
            self.next_step = 0
            return
        slots = data.column("slot").to_pylist()
        keys = data.column("key").combine_chunks().flatten().to_numpy().reshape(-1, DIM).astype(np.float32)
        contents = data.column("content").to_pylist()
        scores = data.column("score").to_numpy()
        steps = data.column("step").to_numpy()
        order = np.argsort(steps, kind="stable")
        by_slot: dict[str, list[int]] = {}
        for i in order:
            by_slot.setdefault(slots[i], []).append(int(i))
        for slot, idx in by_slot.items():
            self.slots[slot] = SlotRows(keys[idx], [contents[i] for i in idx], scores[idx], steps[idx])
        self.next_step = int(steps.max()) + 1

    def restore(self, version: int) -> None:
        """Make `version` the latest again (later writes are discarded from the live table)."""
        if version != self.version:
            self.table.restore(version)
        self.refresh()

    def rows(self, slot: str) -> SlotRows:
        return self.slots.get(slot, SlotRows())

    # ------------------------------------------------------------------ writes
    def add(
        self, slots: list[str], keys: np.ndarray, contents: list[str], scores: list[float], persist: bool = True
    ) -> None:
        """Append rows (one table write) and update the snapshot. `persist=False` updates only the
        snapshot: a rank that does not write keeps the same view as the rank that does."""
        if not slots:
            return
        steps = list(range(self.next_step, self.next_step + len(slots)))
        if persist:
            self.table.add(pa.table({
                "slot": slots, "key": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1), pa.float32()), DIM),
                "content": contents, "score": [float(s) for s in scores], "step": steps,
            }))
        self.next_step += len(slots)
        by_slot: dict[str, list[int]] = {}
        for i, slot in enumerate(slots):
            by_slot.setdefault(slot, []).append(i)
        for slot, idx in by_slot.items():  # one concatenation per slot, rows kept in step order
            r = self.slots.setdefault(slot, SlotRows())
            r.keys = np.concatenate([r.keys, keys[idx]])
            r.contents.extend(contents[i] for i in idx)
            r.scores = np.append(r.scores, [scores[i] for i in idx])
            r.steps = np.append(r.steps, [steps[i] for i in idx])

    def drop_oldest(self, capacity: int) -> int:
        """Keep the newest `capacity` rows of every slot (one delete for all slots); rows dropped."""
        clauses, dropped = [], 0
        for slot, r in self.slots.items():
            extra = len(r) - capacity
            if extra > 0:
                cut = int(r.steps[extra])  # rows are in step order: keep steps >= cut
                clauses.append(f"(slot = {_quote(slot)} AND step < {cut})")
                self.slots[slot] = SlotRows(r.keys[extra:], r.contents[extra:], r.scores[extra:], r.steps[extra:])
                dropped += extra
        if clauses:
            self.table.delete(" OR ".join(clauses))
        return dropped

    def counts(self) -> dict[str, int]:
        return {slot: len(r) for slot, r in sorted(self.slots.items())}


class SlotStore:
    """Base of the stores built on one `SlotTable` (tip memory, novelty): the version a checkpoint
    records, restoring it, reloading after another rank's writes, and per-slot counts."""

    table: SlotTable

    @property
    def version(self) -> int:
        return self.table.version

    def restore(self, version: int) -> None:
        self.table.restore(version)

    def refresh(self) -> None:
        self.table.refresh()

    def counts(self) -> dict[str, int]:
        return self.table.counts()
