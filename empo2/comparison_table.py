"""The comparison's table on disk: `results.csv`, `curves.csv`, `summary.md` and the plots drawn from them.

Why its own module: the harness (`empo2.compare`) runs cells; this is the record they leave, and
more than the harness reads and writes it (`bench/publish_comparison.py` redraws a published copy;
several harness processes merge their rows into one table under its lock). A row is one finished
cell (method, task, seed); the CSVs are the record, and everything else here is drawn from them,
so a table merged from several processes or machines redraws to the same summary and plots.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from empo2.cell_claims import held, table_lock

MEAN = "mean over tasks"
RESULT_FIELDS = ["method", "task", "seed", "return", "success_rate", "minutes"]
"""One row per finished cell: its held-out mean return and success rate, and its wall-clock minutes."""
CURVE_FIELDS = ["method", "task", "seed", "iteration", "return"]
"""One row per cell and iteration: training rollouts' mean return (reflexion: its adaptation pass's)."""
PAIRED_REFERENCES = ("warm_start", "grpo")
"""The methods every other one is compared with seed by seed in `summary.md`: the starting point all
trained methods share, and the baseline EMPO² must beat."""


def summarise(results: list[dict], key: str = "return") -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per method and task: mean and (sample) std of `key` over seeds, plus the mean over tasks."""
    means: dict[str, dict[str, float]] = {}
    stds: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in results):
        mine = [r for r in results if r["method"] == method]
        for task in dict.fromkeys(r["task"] for r in mine):
            vals = [float(r[key]) for r in mine if r["task"] == task]
            means.setdefault(method, {})[task] = statistics.fmean(vals)
            stds.setdefault(method, {})[task] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        per_seed = list(seed_means(results, method, key).values())
        means[method][MEAN] = statistics.fmean(per_seed)
        stds[method][MEAN] = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    return means, stds


def seed_means(results: list[dict], method: str, key: str = "return") -> dict[str, float]:
    """`method`'s `key` per seed (as a string), averaged over its tasks: the values behind the
    table's "mean over tasks" column."""
    mine = [r for r in results if r["method"] == method]
    return {s: statistics.fmean(float(r[key]) for r in mine if str(r["seed"]) == s)
            for s in dict.fromkeys(str(r["seed"]) for r in mine)}


def paired_differences(results: list[dict], method: str, reference: str, key: str = "return") -> dict[str, float]:
    """`method` minus `reference` per seed, on the mean over tasks, for the seeds both have finished.

    Why paired: the cells of one seed share their starting point, the training variations each
    iteration draws and the held-out instances, so the per-seed difference removes what the seed
    gives both; its mean ± std over seeds is the comparison the table's column std cannot make.
    """
    a, b = seed_means(results, method, key), seed_means(results, reference, key)
    return {seed: a[seed] - b[seed] for seed in sorted(a, key=int) if seed in b}


def _paired_lines(results: list[dict]) -> list[str]:
    """`summary.md`'s second table: each method against each of `PAIRED_REFERENCES` present, seed by seed."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    references = [m for m in PAIRED_REFERENCES if m in methods]
    # naive does not start from the shared point; the first reference against itself says nothing
    compared = [m for m in methods if m != "naive" and m not in references[:1]]
    if not references or not compared:
        return []
    lines = ["", "Paired by seed (cells of one seed share the starting point, training draws and held-out "
             "instances): return difference per seed, then mean ± std over the seeds both finished.", "",
             "| method | " + " | ".join(f"− {ref} per seed | mean ± std" for ref in references) + " |",
             "|---|" + "---|---:|" * len(references)]
    for method in compared:
        cells = []
        for ref in references:
            diffs = paired_differences(results, method, ref) if method != ref else {}
            values = list(diffs.values())
            cells.append(", ".join(f"{v:+.1f}" for v in values) or "–")
            cells.append("–" if not values else f"{statistics.fmean(values):+.1f}" if len(values) == 1
                         else f"{statistics.fmean(values):+.1f} ± {statistics.stdev(values):.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.partial")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # atomic: a stop mid-write keeps the previous table


def read_results_csv(path: Path) -> list[dict]:
    """The rows of one of the harness's CSVs (results or curves); none when it is not written yet."""
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_outputs(results: list[dict], out_dir: Path, title: str, curves: list[dict] | None = None) -> Path:
    """Write the table (`results.csv`, `curves.csv`) and everything drawn from it (`summary.md`,
    `comparison.png`, `curves.png`) into `out_dir`; the summary's path."""
    from empo2.plots import score_bars, seed_band_curves

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "results.csv", RESULT_FIELDS, results)
    means, stds = summarise(results)
    s_means, s_stds = summarise(results, "success_rate")
    tasks = [*dict.fromkeys(str(r["task"]) for r in results), MEAN]
    seeds = sorted({int(r["seed"]) for r in results})
    lines = [f"Mean ± std over seeds {seeds} (test split; a method with one seed so far: its value): return, then success rate.", "",
             "| method | seeds | " + " | ".join(f"{t} return | {t} success" for t in tasks) + " |",
             "|---|---:|" + "---:|---:|" * len(tasks)]
    for method in means:
        seeds_of = {t: len({r["seed"] for r in results if r["method"] == method and (t == MEAN or r["task"] == t)})
                    for t in tasks}
        cells = [_table_cell(means[method][t], stds[method][t], s_means[method][t], s_stds[method][t], spread=seeds_of[t] > 1)
                 if t in means[method] else "– | –" for t in tasks]  # a cell not run yet
        lines.append(f"| {method} | {seeds_of[MEAN]} | " + " | ".join(cells) + " |")
    lines += _paired_lines(results)
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    score_bars(means, out_dir / "comparison.png", ylabel="mean return (test split)", title=title, errors=stds)
    if curves:
        _write_csv(out_dir / "curves.csv", CURVE_FIELDS, curves)
        for task in dict.fromkeys(c["task"] for c in curves):
            by_method: dict[str, dict[str, list[float]]] = {}
            for c in curves:
                if c["task"] == task:
                    by_method.setdefault(c["method"], {}).setdefault(str(c["seed"]), []).append(float(c["return"]))
            name = "curves.png" if len({c["task"] for c in curves}) == 1 else f"curves-{task}.png"
            seed_band_curves({m: list(runs.values()) for m, runs in by_method.items()}, out_dir / name,
                             ylabel="mean return per iteration\n(training rollouts; reflexion: test)",
                             title=f"{title}\n{task}: mean ± std over seeds")
    return out_dir / "summary.md"


def _table_cell(mean: float, std: float, success: float, success_std: float, spread: bool) -> str:
    """One task's return and success columns; one seed has no spread to show, so no `± 0.0`."""
    if not spread:
        return f"{mean:.1f} | {success:.2f}"
    return f"{mean:.1f} ± {std:.1f} | {success:.2f} ± {success_std:.2f}"


def finished_cells(out_dir: Path) -> set[tuple[str, str, str]]:
    """(method, task, seed) of every cell in the comparison's table on disk (other processes'
    included: `empo2.cell_claims`)."""
    return {(r["method"], r["task"], str(r["seed"])) for r in read_results_csv(out_dir / "results.csv")}


def record_cell(out_dir: Path, row: dict, curve: list[dict], title: str) -> None:
    """Add one finished cell's row and curve to the comparison's table, merged under the table's
    lock with what is on disk (rows other processes finished meanwhile are kept)."""
    key = lambda r: (r["method"], r["task"], str(r["seed"]))  # noqa: E731
    with held(table_lock(out_dir)):
        results = [r for r in read_results_csv(out_dir / "results.csv") if key(r) != key(row)] + [row]
        curves = [c for c in read_results_csv(out_dir / "curves.csv") if key(c) != key(row)] + curve
        write_outputs(results, out_dir, title, curves)
