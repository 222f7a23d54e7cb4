"""The tip memory on a real LanceDB table: threshold, sort, top-k, FIFO, dedup, versions, CLI."""

import numpy as np
import pytest

from empo2.embedder import DIM
from empo2.memory import MemoryStore, entry_content, entry_tip, main, memory_dir, summarise_memory


def unit(cos: float) -> np.ndarray:
    """A unit vector whose cosine with e0 is `cos`."""
    v = np.zeros(DIM, dtype=np.float32)
    v[0], v[1] = cos, np.sqrt(max(0.0, 1 - cos**2))
    return v


Q = unit(1.0)


def test_entry_content_format():
    assert entry_content("try the garden", "go to garden", 50) == (
        "try the garden; the action at that step was go to garden; the episode ended with score 50.0/100")


def test_threshold_sort_ties_and_top_k(tmp_path):
    m = MemoryStore(tmp_path, threshold=0.5, top_k=3)
    # content, cos with the query, score
    rows = [("a", 0.9, 10.0), ("b", 0.49, 100.0), ("c", 0.51, 50.0), ("d", 0.99, 50.0), ("e", 0.7, -100.0), ("f", 0.8, 80.0)]
    m.write(["s"] * 6, np.stack([unit(c) for _, c, _ in rows]), [r[0] for r in rows], [r[2] for r in rows])
    tips = m.retrieve(["s"], Q[None])[0]
    # b is below the threshold; by score: f 80, then c and d tie at 50 -> c is older; a, e cut by top_k
    assert [t.content for t in tips] == ["f", "c", "d"]
    assert tips[1].similarity == pytest.approx(0.51, abs=1e-6)
    m.top_k = 10
    assert [t.content for t in m.retrieve(["s"], Q[None])[0]] == ["f", "c", "d", "a", "e"]


def test_slots_never_mix(tmp_path):
    m = MemoryStore(tmp_path)
    m.write(["x", "y"], np.stack([Q, Q]), ["tip for x", "tip for y"], [1.0, 2.0])
    assert [t.content for t in m.retrieve(["x"], Q[None])[0]] == ["tip for x"]
    assert m.retrieve(["z"], Q[None]) == [[]]


def test_duplicates_skipped_and_fifo(tmp_path):
    m = MemoryStore(tmp_path, capacity=3)
    assert m.write(["s", "s", "t"], np.stack([Q, Q, Q]), ["one", "one", "one"], [0, 0, 0]) == 2  # same slot dup
    assert m.write(["s"], Q[None], ["one"], [5]) == 0  # already stored
    m.write(["s"] * 3, np.stack([Q] * 3), ["two", "three", "four"], [1, 2, 3])
    assert m.counts() == {"s": 3, "t": 1}
    assert sorted(t.content for t in m.retrieve(["s"], Q[None])[0]) == ["four", "three", "two"]  # "one" dropped
    fresh = MemoryStore(tmp_path, capacity=3)  # the table on disk agrees with the snapshot
    assert fresh.counts() == {"s": 3, "t": 1}
    assert sorted(t.content for t in fresh.retrieve(["s"], Q[None])[0]) == ["four", "three", "two"]


def test_re_added_tip_survives_an_overflowing_write(tmp_path):
    """Entries go in one at a time: "c" pushes "a" out of the full slot, then "a" is new again. Checked
    against the slot before the write, "a" would be skipped as a duplicate and then evicted."""
    m = MemoryStore(tmp_path, capacity=2)
    m.write(["s", "s"], np.stack([Q, Q]), ["a", "b"], [0, 0])
    assert m.write(["s", "s"], np.stack([Q, Q]), ["c", "a"], [1, 1]) == 2
    assert sorted(t.content for t in m.retrieve(["s"], Q[None])[0]) == ["a", "c"]
    assert sorted(t.content for t in MemoryStore(tmp_path, capacity=2).retrieve(["s"], Q[None])[0]) == ["a", "c"]


def test_restore_discards_later_writes(tmp_path):
    m = MemoryStore(tmp_path)
    m.write(["s"], Q[None], ["kept"], [1.0])
    v = m.version
    m.write(["s"], Q[None], ["after the checkpoint"], [9.0])
    other = MemoryStore(tmp_path)  # e.g. a resumed process
    other.restore(v)
    assert [t.content for t in other.retrieve(["s"], Q[None])[0]] == ["kept"]
    assert other.table.next_step == 1
    m.refresh()
    assert m.counts() == {"s": 1}


def test_cli_lists_slots_and_tips(tmp_path, capsys):
    m = MemoryStore(memory_dir(tmp_path))
    m.write(["find/1", "find/1", "find/2"], np.stack([Q, Q, Q]), ["low", "high", "other"], [-100.0, 100.0, 0.0])
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 entries in 2 slots" in out and "find/1" in out
    assert main([str(tmp_path), "--slot", "find/1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("high") and lines[1].endswith("low")
    assert main([str(tmp_path), "--slot", "nope"]) == 1
    assert main([str(tmp_path / "missing")]) == 1


def test_summary_counts_the_agents_words_only():
    contents = [entry_content("check the attic", "go to attic", 100.0),
                entry_content("check the attic", "focus on key", 100.0),
                entry_content("no idea", "go to hall", 0.0)]
    assert entry_tip(contents[1]) == "check the attic"
    m = summarise_memory(contents, [100.0, 100.0, 0.0], slots=2)
    # 2 of 3 entries scored > 0; 2 distinct tips; words (3 + 3 + 2) / 3
    assert (m.entries, m.slots, m.distinct_tips) == (3, 2, 2)
    assert m.scoring_share == pytest.approx(2 / 3) and m.mean_tip_words == pytest.approx(8 / 3)
    assert summarise_memory([], [], slots=0).entries == 0


def test_cli_sample_summarises_and_draws(tmp_path, capsys):
    m = MemoryStore(memory_dir(tmp_path))
    m.write(["find/1", "find/1", "find/2"], np.stack([Q, Q, Q]),
            [entry_content("a b", "go", 100.0), entry_content("c", "go", 0.0), entry_content("d", "go", 0.0)],
            [100.0, 0.0, 0.0])
    assert main([str(tmp_path), "--sample", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 entries in 2 slots; 33% written in episodes that scored > 0; 3 distinct tips, 1.3 words each on average"
    assert len(lines) == 3 and all("the action at that step was go" in line for line in lines[1:])
