"""What a policy actually writes: response categories and its most common last actions, per file.

Reads episode files (`eval/test-*.jsonl` of an evaluation, `trajectories/iter_*.jsonl` of training;
`.jsonl.gz` too) and prints, per file: episodes and their success rate, steps, and the share of
responses that were valid as written, that named an action template's placeholder (`<object>`,
`<room>`: text copied from the action list, which action recovery still maps to some action), and
that were recovered otherwise; then the most common last responses. A policy that has drifted onto
a recovered non-action (a protocol's seed that scores near chance) shows up here first.

    python bench/episode_actions.py results/protocol-keyroom-success/episodes/*.jsonl.gz
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = re.compile(r"<[a-z ]+>")


@dataclass
class ActionCounts:
    episodes: int = 0
    successes: int = 0
    steps: int = 0
    raw_valid: int = 0
    placeholder: int = 0
    last: collections.Counter = field(default_factory=collections.Counter)

    def add(self, episode: dict) -> None:
        self.episodes += 1
        self.successes += bool(episode.get("success"))
        for step in episode["steps"]:
            self.steps += 1
            response = step["response"].strip()
            if PLACEHOLDER.search(response):
                self.placeholder += 1
            elif step["info"].get("raw_valid"):
                self.raw_valid += 1
        if episode["steps"]:
            self.last[episode["steps"][-1]["response"].strip()] += 1


def read_episodes(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def count(path: Path) -> ActionCounts:
    counts = ActionCounts()
    for episode in read_episodes(path):
        counts.add(episode)
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=3, help="most common last responses to show")
    args = ap.parse_args(argv)
    for path in args.files:
        c = count(path)
        if not c.steps:
            print(f"{path}: no steps")
            continue
        recovered = c.steps - c.raw_valid - c.placeholder
        print(f"{path}: {c.episodes} episodes, success {c.successes / c.episodes:.3f}, {c.steps} steps: "
              f"valid as written {c.raw_valid / c.steps:.0%}, template placeholder {c.placeholder / c.steps:.0%}, "
              f"recovered otherwise {recovered / c.steps:.0%}")
        print("    last responses: " + ", ".join(f"{r!r} ×{n}" for r, n in c.last.most_common(args.top)))


if __name__ == "__main__":
    main()
