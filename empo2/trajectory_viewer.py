"""A static HTML page per run that replays its episodes step by step, tips included.

Why static HTML without scripts: it opens from a copied run folder in any browser, offline, and
needs no server. Each iteration and each episode is a collapsible section; each step shows the tips
that were in its prompt, the model's raw response, the action taken, the observation, and rewards.

    python -m empo2.trajectory_viewer RUN_DIR      # writes RUN_DIR/trajectories/index.html
"""

from __future__ import annotations

import argparse
import json
import re
from html import escape
from pathlib import Path

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px}
summary{cursor:pointer;margin:.3em 0}
.ep{margin-left:1em}.step{border-left:3px solid #ccc;margin:.5em 0 .5em 1em;padding-left:.7em}
.tips{background:#fff6e0;padding:.3em .6em}.obs{white-space:pre-wrap;color:#333}
.resp{white-space:pre-wrap;font-family:monospace;background:#f3f3f3;padding:.2em .4em}
.ok{color:#1a7f37}.bad{color:#b42318}.meta{color:#666;font-size:.9em}
"""


def _iteration_files(folder: Path) -> list[tuple[int, list[Path]]]:
    by_iter: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("iter_*.jsonl")):
        match = re.match(r"iter_(\d+)", path.name)
        if match:
            by_iter.setdefault(int(match.group(1)), []).append(path)
    return sorted(by_iter.items())


def _episode_html(ep: dict) -> str:
    verdict = "ok" if ep.get("success") else "bad"
    head = (f"<summary><b>{escape(str(ep.get('instance')))}</b> · mode {escape(str(ep.get('mode')))} · "
            f"<span class='{verdict}'>return {float(ep.get('return', 0)):.1f}</span> · "
            f"{len(ep.get('steps', []))} steps · advantage {float(ep.get('advantage') or 0):+.2f}</summary>")
    parts = [f"<div class='obs'>{escape(ep.get('first_observation', ''))}</div>"]
    for i, s in enumerate(ep.get("steps", [])):
        tips = s.get("tips") or []
        tip_html = ("<div class='tips'><b>tips in the prompt</b><ol>"
                    + "".join(f"<li>{escape(t)}</li>" for t in tips) + "</ol></div>") if tips else ""
        parts.append(
            f"<div class='step'><div class='meta'>step {i + 1} · reward {s.get('reward', 0):+g}"
            f" · intrinsic {s.get('intrinsic', 0):+g} · advantage {float(s.get('advantage', ep.get('advantage')) or 0):+.2f} · prompt {s.get('prompt_tokens', 0)} tokens</div>"
            f"{tip_html}<div class='resp'>{escape(s.get('response', ''))}</div>"
            f"<div>→ <b>{escape(s.get('action', ''))}</b></div>"
            f"<div class='obs'>{escape(s.get('observation', ''))}</div></div>"
        )
    if ep.get("tip"):
        parts.append(f"<div class='tips'><b>tip written after the episode:</b> {escape(ep['tip'])}</div>")
    if ep.get("error"):
        parts.append(f"<div class='bad'>error: {escape(str(ep['error']))}</div>")
    return f"<details class='ep'>{head}{''.join(parts)}</details>"


def write_viewer(run_dir: str | Path, folder: str = "trajectories") -> Path | None:
    """Write `<run_dir>/<folder>/index.html` from the run's JSONL files; None when there are none."""
    src = Path(run_dir) / folder
    files = _iteration_files(src) if src.is_dir() else []
    if not files:
        return None
    sections = []
    for iteration, paths in files:
        episodes = [json.loads(line) for p in paths for line in p.open() if line.strip()]
        n = max(len(episodes), 1)
        mean = sum(float(ep.get("return", 0)) for ep in episodes) / n
        modes = sorted({str(ep.get("mode")) for ep in episodes})
        sections.append(
            f"<details><summary><b>iteration {iteration}</b> · {len(episodes)} episodes · mean return {mean:.1f}"
            f" · modes {escape(', '.join(modes))}</summary>{''.join(_episode_html(ep) for ep in episodes)}</details>"
        )
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(Path(run_dir).name)} episodes</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(Path(run_dir).name)}: episodes</h1>"
            f"<p class='meta'>Open an iteration, then an episode. Orange boxes are the tips that were in the prompt.</p>"
            f"{''.join(sections)}</body></html>")
    out = src / "index.html"
    out.write_text(page)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empo2.trajectory_viewer", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    out = write_viewer(args.run_dir)
    print(out if out else f"no trajectories under {args.run_dir}")
    return 0 if out else 1


if __name__ == "__main__":
    raise SystemExit(main())
