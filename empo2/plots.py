"""The pictures a run leaves next to its numbers: learning curves, adaptation curves, score bars.

Why matplotlib files rather than a dashboard: runs happen on machines without a display or a
browser, and a PNG beside `metrics.csv` survives copying the run folder anywhere. Every figure
labels its axes and says what it shows; the Agg backend is forced so nothing needs a display.

Imports inside functions are deliberate: matplotlib loads only when a picture is drawn.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

# Training-time phases summed into the wall-clock axis (robust to resumes, unlike timestamps).
TIME_PHASES = ("time/rollout_s", "time/rollout_hooks_s", "time/old_logprob_s", "time/update_s", "time/eval_s")
MODE_STYLE = {  # EMPO² update mode -> (marker, colour, label)
    "on_policy": ("o", "tab:blue", "on-policy (no tips)"),
    "on_policy_memory": ("s", "tab:orange", "on-policy with tips"),
    "off_policy": ("^", "tab:green", "off-policy (tips distilled)"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_rows(metrics_csv: str | Path) -> list[dict[str, str]]:
    with Path(metrics_csv).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _num(row: dict[str, str], key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else math.nan


def iteration_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per iteration (the CSV logger may write validation in its own rows): merged by epoch."""
    merged: dict[int, dict[str, str]] = {}
    for row in rows:
        if row.get("epoch", "") == "":
            continue
        target = merged.setdefault(int(float(row["epoch"])), {})
        target.update({k: v for k, v in row.items() if v != ""})
    return [merged[k] for k in sorted(merged)]


def dominant_mode(row: dict[str, str]) -> str:
    shares = {m: _num(row, f"mode/{m}") for m in MODE_STYLE}
    shares = {m: v for m, v in shares.items() if not math.isnan(v)}
    return max(shares, key=shares.get) if shares else "on_policy"


def learning_curves(metrics_csv: str | Path, out_png: str | Path, title: str = "") -> Path:
    """Return vs iteration and vs training time; each iteration's marker shows its EMPO² mode."""
    rows = iteration_rows(read_rows(metrics_csv))
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    its = [_num(r, "iteration") if "iteration" in r else float(r["epoch"]) for r in rows]
    ret = [_num(r, "rollout/return") for r in rows]
    clock, total = [], 0.0
    for r in rows:
        total += sum(v for v in (_num(r, k) for k in TIME_PHASES) if not math.isnan(v))
        clock.append(total)
    modes = [dominant_mode(r) for r in rows]
    for ax, xs, xlabel in ((axes[0], its, "iteration"), (axes[1], clock, "training time (s, summed phases)")):
        ax.plot(xs, ret, color="0.6", linewidth=1, zorder=1)
        for mode, (marker, colour, label) in MODE_STYLE.items():
            pts = [(x, y) for x, y, m in zip(xs, ret, modes) if m == mode]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=colour, label=label, zorder=2)
        val = [(x, _num(r, "val/return")) for x, r in zip(xs, rows) if not math.isnan(_num(r, "val/return"))]
        if val:
            ax.plot(*zip(*val), color="tab:red", marker="D", linestyle="--", label="validation return")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("mean episode return (rollouts)")
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title or "Learning curve")
    return _save(fig, out_png)


def adaptation_curve(iterations: Sequence[int], returns: Sequence[float], out_png: str | Path,
                     title: str = "", success: Sequence[float] | None = None) -> Path:
    """Return per adaptation iteration; iteration 0 (no memory yet) is marked apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(iterations, returns, color="tab:orange", marker="s", label="with memory")
    if iterations:
        ax.scatter([iterations[0]], [returns[0]], color="tab:blue", marker="o", s=60, zorder=3, label="iteration 0: no memory")
    if success is not None:
        ax2 = ax.twinx()
        ax2.plot(iterations, success, color="0.5", linestyle=":", label="success rate (right axis)")
        ax2.set_ylabel("success rate")
        ax2.legend(loc="lower left", fontsize=8)
        ax2.set_ylim(-0.05, 1.05)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("adaptation iteration (no weight updates)")
    ax.set_ylabel("mean episode return")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "Adaptation with memory only")
    return _save(fig, out_png)


def score_bars(groups: dict[str, dict[str, float]], out_png: str | Path, ylabel: str = "mean return",
               title: str = "", errors: dict[str, dict[str, float]] | None = None) -> Path:
    """Grouped bars: `groups[series][category] = value` (e.g. method -> task -> return)."""
    plt = _pyplot()
    series = list(groups)
    categories = sorted({c for g in groups.values() for c in g}, key=lambda c: (c == "mean over tasks", c))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(categories) * max(len(series), 1)), 4))
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        xs = [k + i * width for k in range(len(categories))]
        ys = [groups[name].get(c, math.nan) for c in categories]
        err = [errors[name].get(c, 0.0) for c in categories] if errors and name in errors else None
        ax.bar(xs, ys, width=width, label=name, yerr=err, capsize=3)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(categories))])
    ax.set_xticklabels(categories, rotation=20, ha="right", fontsize=8)
    ax.set_xlabel("task")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="0.3", linewidth=0.8)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, out_png)


def seed_band_curves(curves: dict[str, list[list[float]]], out_png: str | Path, ylabel: str = "mean return",
                     title: str = "") -> Path:
    """One line per method: the mean over seeds of `curves[method][seed][iteration]`, with a band of
    ± one standard deviation over seeds (seeds of unequal length are cut to the shortest)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        cols = [[r[k] for r in runs] for k in range(n)]
        mean = [sum(c) / len(c) for c in cols]
        std = [math.sqrt(sum((v - m) ** 2 for v in c) / (len(c) - 1)) if len(c) > 1 else 0.0 for c, m in zip(cols, mean)]
        xs = list(range(n))
        line, = ax.plot(xs, mean, marker="o", markersize=3, label=f"{name} ({len(runs)} seed{'s' if len(runs) != 1 else ''})")
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, out_png)


def axis_labels(fig: Any) -> list[dict[str, str]]:
    """Title and axis labels of each plot in a figure (also stored in the PNG, see `_save`)."""
    return [{"title": ax.get_title(), "x": ax.get_xlabel(), "y": ax.get_ylabel()} for ax in fig.get_axes()]


def _save(fig: Any, out_png: str | Path) -> Path:
    """Write the PNG with its plots' labels in a text chunk (`Axes`), so tools and tests can read
    what a picture shows without looking at it."""
    import json

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Axes": json.dumps(axis_labels(fig))})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out
