"""`python -m empo2.compare --config FILE [compare.seeds=[0,1,2]] [compare.tasks=[...]]`: baselines, like for like.

Why one harness: a comparison is only fair when every method plays the same instances with the same
model, prompts, budgets and scorer. Every method here is this trainer with switches, scored on the
test split at `eval.temperature` with `eval.episodes_per_instance` episodes per instance:

- **naive**: the config's starting model (never the harness's warm start), no memory, no training;
- **warm_start**: with `compare.warm_start=true` the harness first runs `empo2.sft` once per task
  (`sft.*`, the config's `seed`) and starts every other method from its policy; this method scores that
  policy alone, so every trained method can be read against its own starting point;
- **reflexion**: the starting model (the warm start when there is one), memory only, no weight
  updates: the adaptation loop on the test instances themselves (every instance,
  `episodes_per_instance` episodes each, so each iteration is one full evaluation) for
  `compare.reflexion_iterations` iterations, by default as many as fit in a training cell's
  episodes (`equal_budget_iterations`); its score is the last iteration's, after the memory of all
  earlier attempts;
- **grpo**: training with `mode.p = 0` (no memory, no novelty bonus), then evaluation;
- **gigpo**, **hgpo**: as grpo, with step-level credit (`algo.advantage` gigpo or hgpo);
- **empo2**: training with the config as given, then evaluation (no memory at test time); its
  estimator is the config's `algo.advantage`, so EMPO² with step-level credit is that one switch;
- **a `compare.variants` name**: EMPO² (as above) with that variant's `key=value` overrides, so
  ablations sit in the same table as their baselines.

Writes `<run>/compare/`: `results.csv` (one row per method × task × seed), `curves.csv` (each
cell's return per iteration: training rollouts for trained methods, the adaptation loop for
reflexion), `summary.md` (mean ± std over seeds of return and success rate per task, and the mean
over tasks), `comparison.png` and `curves.png` (one line per method, a band of ± one std over
seeds); each method's own run folder (checkpoints, metrics, curves, episodes) is under
`<run>/compare/<task>-seed<S>/<method>/`, the warm start under `<run>/compare/<task>/warm_start/`.

Stopping and continuing: every finished cell (method, task, seed) is written to `results.csv` at
once, and running the same command again skips it. A training cell stopped after a checkpoint
continues from its last iteration, and so does a reflexion cell (its adaptation loop checkpoints
every iteration: memory version and sampling state); their `minutes` then count only the part run
since. Any other unfinished cell's folder is removed and the cell is run again from its start. Continuing with a
different config (other than more seeds or methods) is refused, since the table would mix two
experiments.

Several processes, one comparison: the same command started N times (one process per GPU with
`CUDA_VISIBLE_DEVICES`, or per core) splits the grid. Each process runs only the cells it claims
(a lock file per cell; a cell another process holds is skipped), adds finished rows to the table
under a lock, merged with the others' (`record_cell`), and waits for a warm start another process is
training (`empo2.cell_claims`). A process that stops releases its claims; the next run of the
command continues its cells as above. The run folder is local; `bench/publish_comparison.py` copies the finished cells into a
folder for committing, and its `--restore` puts them back on a fresh machine
(`restore_published`), so a comparison spread over several machines' sessions keeps every finished cell.

Imports inside functions are deliberate: the fit, evaluate and adapt machinery loads only after
the config has been checked (a config error answers at once).
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from pathlib import Path

from empo2.cell_claims import cell_lock, claim, held, table_lock
from empo2.comparison_table import finished_cells, read_results_csv, record_cell, write_outputs
from empo2.cli import Command, run_command
from empo2.config import Config, ConfigError, load_config, to_dict, to_yaml, validate

PLAIN_RL = {"grpo": "grpo", "gigpo": "gigpo", "hgpo": "hgpo"}
"""Methods that train without memory or novelty bonus, and the advantage estimator each uses."""
TRAINED = (*PLAIN_RL, "empo2")


def cell_dir(cfg: Config, task: str | None, seed: int) -> Path:
    return cfg.run_dir / "compare" / f"{task or 'task'}-seed{seed}"


def variant_config(cfg: Config, name: str) -> Config:
    """The config with `compare.variants[name]`'s overrides applied (an EMPO² ablation)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in cfg.compare.variants[name]]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(overrides))
        out = OmegaConf.to_object(merged)
        validate(out)
    except (OmegaConfBaseException, ConfigError) as err:
        msg = (getattr(err, "msg", None) or str(err)).splitlines()[0]
        raise ConfigError(f"compare.variants.{name}: {msg}") from None
    assert isinstance(out, Config)
    return out


def trains(cfg: Config, method: str) -> bool:
    """True for the methods that run `fit` before they are scored (variants are EMPO²)."""
    return method in TRAINED or method in cfg.compare.variants


def method_config(cfg: Config, method: str, task: str | None, seed: int, warm: Path | None = None) -> Config:
    """The config of one method on one task and seed (its own run folder); `warm`: the harness's
    warm-started policy every method but naive starts from. A `compare.variants` name trains as
    `empo2` on its variant's config."""
    from empo2.adapt import retarget_env

    out = variant_config(cfg, method) if method in cfg.compare.variants else copy.deepcopy(cfg)
    out.seed = seed
    if task is not None:
        retarget_env(out, task, "compare.tasks")
    out.out_dir = str(cell_dir(cfg, task, seed))
    out.name = method
    out.ckpt_path = None
    out.eval.val_every = 0
    if warm is not None and method != "naive":
        out.model.init_from = str(warm)
    if method in PLAIN_RL:
        out.mode.p = 0.0
        out.memory.enabled = False
        out.intrinsic.kind = "none"
        out.algo.advantage = PLAIN_RL[method]
    validate(out)
    return out


def warm_start_config(cfg: Config, task: str | None) -> Config:
    """The `empo2.sft` run of one task: `<run>/compare/<task>/warm_start/`, under the config's own
    `seed` (not the first of `compare.seeds`, which a continuation may narrow to the seeds still
    to run: the warm start, and so every cell's starting point, must not depend on that)."""
    from empo2.adapt import retarget_env

    out = copy.deepcopy(cfg)
    if task is not None:
        retarget_env(out, task, "compare.tasks")
    out.out_dir = str(cfg.run_dir / "compare" / (task or "task"))
    out.name = "warm_start"
    out.ckpt_path = None
    return out


PUBLISHED_WARM_START = "warm_start.published.json"
"""Beside a task's `warm_start/` folder: the record of the warm start a restored comparison's
finished cells started from (`restore_published`), to check a retrained one against."""


def warm_start_drift(published: list[float], trained: list[float], rel: float = 1e-3) -> str | None:
    """None when a retrained warm start reproduces the published one's held-out answer NLL after
    every epoch (within `rel`, relative), else a line saying where they part. The weights are not
    published (hundreds of MB), so this curve is what shows that cells run now start where the
    published ones did; code changes to rendering or batching since can move it."""
    if len(published) == len(trained) and all(abs(a - b) <= rel * abs(a) for a, b in zip(published, trained)):
        return None
    if any(math.isnan(x) for x in (*published, *trained)):
        return "no held-out demonstrations (sft.val_fraction) to check the retrained warm start against the published one"
    shown = lambda xs: " -> ".join(f"{x:.3f}" for x in xs)  # noqa: E731
    return (f"the retrained warm start's held-out NLL {shown(trained)} differs from the published one's "
            f"{shown(published)}: cells run now start from another policy than the finished cells did")


def warm_start(cfg: Config, task: str | None) -> Path:
    """The task's warm-started policy: reused when a finished one is on disk, else trained (and,
    in a restored comparison, checked against the published record)."""
    import json

    from empo2.sft import POLICY_DIR, RECORD, sft

    scfg = warm_start_config(cfg, task)
    policy = scfg.run_dir / POLICY_DIR
    with held(cell_lock(scfg.run_dir), waiting=f"warm start ({task or cfg.env.name}): another process is training it; waiting"):
        if (policy / RECORD).is_file():
            return policy
        shutil.rmtree(scfg.run_dir, ignore_errors=True)  # an interrupted warm start is redone
        policy = sft(scfg)
    published = scfg.run_dir.parent / PUBLISHED_WARM_START
    if published.is_file():
        trained = json.loads((policy / RECORD).read_text())["held_out_nll"]
        drift = warm_start_drift(json.loads(published.read_text())["held_out_nll"], trained)
        print(f"warning: {drift}" if drift else "warm start: reproduces the published record's held-out NLL", flush=True)
    return policy


def count_test_instances(cfg: Config) -> int:
    from empo2.envs.pool import EnvPool
    from empo2.evaluate import eval_instances

    with EnvPool.from_config(cfg.env, max_size=1) as pool:
        return len(eval_instances(cfg, pool))


def training_curve(run_dir: Path) -> list[float]:
    """Mean training-rollout return per iteration of a finished fit."""
    from empo2.plots import iteration_rows, read_rows

    metrics = run_dir / "logs" / "metrics.csv"
    if not metrics.is_file():
        return []
    return [float(r["rollout/return"]) for r in iteration_rows(read_rows(metrics)) if "rollout/return" in r]


def equal_budget_iterations(iterations: int, episodes_per_iteration: int, eval_episodes: int) -> int:
    """Reflexion's share of the protocol's episode budget, in whole passes over the test set.

    A training cell plays `iterations × episodes_per_iteration` rollouts and then `eval_episodes`
    held-out ones; a reflexion pass plays the `eval_episodes` of the test set. The cell gets the
    largest number of passes that does not exceed the training cell's episodes (at least one):
    ⌊(iterations · episodes_per_iteration + eval_episodes) / eval_episodes⌋."""
    return max(1, (iterations * episodes_per_iteration + eval_episodes) // eval_episodes)


def reflexion_config(cfg: Config) -> Config:
    """A reflexion cell's config: the adaptation loop on every test instance, `eval.*` episodes and
    temperature, `compare.reflexion_iterations` iterations (unset: the training cells' episode
    budget, `equal_budget_iterations`); the last iteration is the cell's score."""
    out = copy.deepcopy(cfg)
    test_instances = count_test_instances(cfg)
    iterations = cfg.compare.reflexion_iterations or equal_budget_iterations(
        cfg.trainer["max_epochs"], cfg.rollout.tasks_per_iteration * cfg.rollout.group_size,
        test_instances * cfg.eval.episodes_per_instance)
    out.adapt.split, out.adapt.temperature = "test", cfg.eval.temperature
    out.adapt.iterations, out.adapt.target_task = iterations, None
    out.rollout.tasks_per_iteration = test_instances
    out.rollout.group_size = cfg.eval.episodes_per_instance
    return out


def can_continue(cfg: Config, method: str) -> bool:
    """True when a stopped cell of `method` left a checkpoint to continue from: a training cell's
    last iteration, or the last finished iteration of a reflexion cell's adaptation loop."""
    from empo2.adapt import adaptation_checkpoint, adaptation_config

    if trains(cfg, method):
        return (cfg.run_dir / "checkpoints" / "last.ckpt").is_file()
    if method == "reflexion":
        return adaptation_checkpoint(adaptation_config(reflexion_config(cfg))).is_file()
    return False


def run_method(cfg: Config, method: str) -> dict:
    """Train (when the method trains) and score one method: {'return', 'success_rate', 'curve'}."""
    from empo2.adapt import adapt
    from empo2.evaluate import evaluate
    from empo2.fit import fit

    if method == "reflexion":
        rows, _, _ = adapt(reflexion_config(cfg), resume=True)
        return {"return": rows[-1]["return"], "success_rate": rows[-1]["success_rate"],
                "curve": [r["return"] for r in rows]}
    curve: list[float] = []
    if trains(cfg, method):
        fit(cfg)
        curve = training_curve(cfg.run_dir)
        cfg.ckpt_path = "last"
    table, _ = evaluate(cfg)
    return {"return": table[-1].mean_return, "success_rate": table[-1].success_rate, "curve": curve}


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("options", "trainer"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


FREE_TO_CHANGE = ("logging.", "checkpoint.")
"""Config sections that do not change what a cell measures (a continued comparison may change them)."""
FREE_KEYS = ("out_dir", "name")
"""Where the run folder is: a comparison restored on another machine may live elsewhere."""


def check_same_experiment(cfg: Config, saved: Path) -> None:
    """Continuing a comparison needs the config it started with (seeds and methods may grow;
    logging and checkpointing may change)."""
    if not saved.is_file():
        return
    before = _flat(to_dict(load_config(saved)))
    now = _flat(to_dict(cfg))
    added_variants = [k for k in now if k.startswith("compare.variants.") and k not in before]
    differ = [k for k in now if now[k] != before.get(k) and k not in ("compare.seeds", "compare.methods")
              and k not in added_variants and k not in FREE_KEYS and not k.startswith(FREE_TO_CHANGE)]
    differ += [k for k in before if k.startswith("compare.variants.") and k not in now]  # a removed variant
    if differ:
        raise ConfigError(
            f"compare: {saved.parent} holds a comparison run with another config ({', '.join(differ[:6])} differ); "
            f"use the same config to continue it, or another name=..."
        )


def whole_grid(cfg: Config, saved: Path) -> Config:
    """The config kept beside the table: a continuation narrowed to some seeds or methods
    (`compare.seeds=[2]`) still records every seed and method of the grid, in their first order."""
    if not saved.is_file():
        return cfg
    before = load_config(saved).compare
    kept = copy.deepcopy(cfg)
    kept.compare.seeds = list(dict.fromkeys([*before.seeds, *cfg.compare.seeds]))
    kept.compare.methods = list(dict.fromkeys([*before.methods, *cfg.compare.methods]))
    return kept


def compare(cfg: Config) -> tuple[list[dict], Path]:
    for name in cfg.compare.variants:
        variant_config(cfg, name)  # a bad override answers before any cell runs
    out_dir = cfg.run_dir / "compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    with held(table_lock(out_dir)):
        check_same_experiment(cfg, out_dir / "config.yaml")
        (out_dir / "config.yaml").write_text(to_yaml(whole_grid(cfg, out_dir / "config.yaml")))
    title = f"{cfg.name}: methods compared"
    for task in cfg.compare.tasks or [None]:
        label = task or cfg.env.name
        warm: Path | None = None  # trained (or found on disk) when the first unfinished cell needs it
        for seed in cfg.compare.seeds:
            for method in cfg.compare.methods:
                cell = (method, label, str(seed))
                if cell in finished_cells(out_dir):
                    continue
                with claim(cell_lock(cell_dir(cfg, task, seed) / method)) as mine:
                    if not mine:
                        print(f"{method:>10}  {label}  seed {seed}: running in another process; skipped", flush=True)
                        continue
                    if cell in finished_cells(out_dir):
                        continue  # another process finished it while this one looked
                    if cfg.compare.warm_start and warm is None:
                        warm = warm_start(cfg, task)
                    score, minutes = run_cell(cfg, method, task, seed, warm, label)
                    record_cell(out_dir, {"method": method, "task": label, "seed": seed, "return": score["return"],
                                          "success_rate": score["success_rate"], "minutes": minutes},
                                [{"method": method, "task": label, "seed": seed, "iteration": k, "return": v}
                                 for k, v in enumerate(score["curve"])], title)
                    print(f"{method:>10}  {label}  seed {seed}: return {score['return']:.2f}  "
                          f"success {score['success_rate']:.2f}  ({minutes:.1f} min)", flush=True)
    with held(table_lock(out_dir)):
        results = read_results_csv(out_dir / "results.csv")
        summary = write_outputs(results, out_dir, title, read_results_csv(out_dir / "curves.csv")) if results else out_dir / "summary.md"
    return results, summary


def run_cell(cfg: Config, method: str, task: str | None, seed: int, warm: Path | None, label: str) -> tuple[dict, float]:
    """Run one claimed cell, continuing it from its last checkpoint when a stopped run left one, else
    from a fresh folder: its score and the minutes it took."""
    mcfg = method_config(cfg, method, task, seed, warm)
    if can_continue(mcfg, method):
        # A stopped training or reflexion cell continues from its last iteration (the
        # experiment's config is the one it started under: check_same_experiment).
        if trains(cfg, method):
            mcfg.ckpt_path = "last"
        print(f"{method:>10}  {label}  seed {seed}: continuing from its last checkpoint", flush=True)
    else:
        shutil.rmtree(mcfg.run_dir, ignore_errors=True)  # any other unfinished cell starts over
        mcfg.run_dir.mkdir(parents=True)
        (mcfg.run_dir / "config.yaml").write_text(to_yaml(mcfg))  # what this cell ran
    t0 = time.perf_counter()
    score = run_method(mcfg, method)
    return score, round((time.perf_counter() - t0) / 60, 2)


PUBLISHED = ("results.csv", "curves.csv", "config.yaml")
"""What a published comparison keeps of `<run>/compare/` that the harness reads to continue."""


def restore_published(published: Path, run: Path) -> list[Path]:
    """Seed `<run>/compare/` with a published comparison's finished cells (`results.csv`,
    `curves.csv`, `config.yaml`; each task's warm-start record beside its `warm_start/` folder, to
    check the retrained warm start against: `warm_start_drift`), so that the same `empo2.compare` command on another machine
    continues it: finished cells are skipped, the rest run. Checkpoints of unfinished cells are not
    published, so those cells start over; the warm start is trained again when a cell needs it.
    Refuses a run folder that already holds results (it would mix two records of one experiment)."""
    compare_dir = run / "compare"
    if not (published / "results.csv").is_file():
        raise ConfigError(f"{published / 'results.csv'}: not found; give the folder bench/publish_comparison.py wrote")
    if (compare_dir / "results.csv").is_file():
        raise ConfigError(f"{compare_dir / 'results.csv'}: already exists; continue that run, or restore into a new folder")
    compare_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in PUBLISHED:
        if (published / name).is_file():
            shutil.copyfile(published / name, compare_dir / name)
            copied.append(compare_dir / name)
    for record in sorted((published / "warm_start").glob("*.json")):  # one per task folder
        (compare_dir / record.stem).mkdir(exist_ok=True)
        shutil.copyfile(record, compare_dir / record.stem / PUBLISHED_WARM_START)
        copied.append(compare_dir / record.stem / PUBLISHED_WARM_START)
    return copied


COMMAND = Command("empo2.compare", "Run baselines and EMPO² in one harness.",
                  example='--config conf/quickstart.yaml "compare.seeds=[0,1]"',
                  config_help="YAML file(s): the EMPO² run every method derives from",
                  overrides_help="compare.seeds=[0,1] compare.tasks=[...] compare.methods=[...] ...")


def main(argv: list[str] | None = None) -> int:
    def run(cfg: Config) -> int:
        from empo2.preemption import run_guarded

        command = COMMAND.command_line(argv)
        result, code = run_guarded(lambda: compare(cfg), lambda stop: f"finished cells are kept; continue with: {command}")
        if code:
            return code
        _, summary = result
        print(summary.read_text() if summary.is_file() else "no cell has finished yet")
        print(f"written to {summary.parent}")
        return 0

    return run_command(COMMAND, argv, run)

if __name__ == "__main__":
    raise SystemExit(main())
