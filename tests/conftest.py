"""Shared fixtures: the embedded tokenizer, a tiny random Llama, and a warm-started tiny Llama.

The warm start is supervised: the tiny model learns to answer KeyRoom prompts with a *uniformly
random* valid action, so it starts as an unbiased random agent that produces real actions. RL tests
then have signal (returns vary inside a group) without any knowledge of which action is right.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from empo2.models import EMBEDDED_PREFIX, build_tiny, embedded_dir, load_tokenizer

EMBEDDED = f"{EMBEDDED_PREFIX}smollm2-135m-instruct"


@pytest.fixture(scope="session")
def embedded_model() -> str:
    if not (embedded_dir("smollm2-135m-instruct") / "config.json").is_file():
        pytest.fail(f"{EMBEDDED} is not prepared: run `make model` (make test does it)")
    return EMBEDDED


@pytest.fixture(scope="session")
def tokenizer(embedded_model):
    return load_tokenizer(embedded_model)


@pytest.fixture(scope="session")
def tiny_model(embedded_model, tmp_path_factory) -> str:
    return str(build_tiny(embedded_model, tmp_path_factory.mktemp("tiny")))


def keyroom_sft_examples(tokenizer, env_options: dict, instances: list[str], n: int, seed: int = 0):
    """(prompt ids, response ids) pairs: KeyRoom states reached by random valid actions, each
    answered with a uniformly random valid action (followed by the end-of-turn token)."""
    from empo2.conversation import Conversation
    from empo2.envs import KeyRoomEnv

    rng = random.Random(seed)
    env = KeyRoomEnv(**env_options)
    examples = []
    while len(examples) < n:
        inst = rng.choice(instances)
        obs, info = env.reset(inst)
        conv = Conversation(instruction=env.turn_instruction())
        conv.add_user(env.first_message(obs, info))
        for _ in range(rng.randint(1, 3)):
            action = rng.choice(env.valid_actions())
            prompt = conv.render(tokenizer, 4096).ids
            response = tokenizer(action, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            examples.append((prompt, response))
            if action.startswith("focus on"):
                break
            result = env.step(action)
            conv.add_assistant(action)
            conv.add_user(result.observation)
    return examples


def supervised(model_dir: str, tokenizer, data, steps: int, batch: int = 16, lr: float = 3e-3) -> None:
    """Fine-tune the tiny model in place on (prompt ids, response ids) pairs (full fine-tuning)."""
    from transformers import AutoModelForCausalLM

    from empo2.token_batch import pack, response_logprobs

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(1)
    for _ in range(steps):
        chosen = rng.sample(data, batch)
        tb = pack([p for p, _ in chosen], [r for _, r in chosen], tokenizer.pad_token_id)
        loss = -(response_logprobs(model, tb).sum() / tb.response_mask.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir)


def warm_start(model_dir: str, tokenizer, env_options: dict, instances: list[str], steps: int = 150) -> None:
    """Supervised warm start in place: a uniformly random agent over valid KeyRoom actions."""
    supervised(model_dir, tokenizer, keyroom_sft_examples(tokenizer, env_options, instances, n=256), steps)


KEYROOM_OPTIONS = {"num_rooms": 3, "objects_per_room": 2, "max_turns": 4, "num_train": 8, "num_test": 4}


@pytest.fixture(scope="session")
def warm_model(embedded_model, tokenizer, tmp_path_factory) -> str:
    folder = build_tiny(embedded_model, tmp_path_factory.mktemp("warm"))
    instances = [f"find/{v}" for v in range(KEYROOM_OPTIONS["num_train"])]
    warm_start(str(folder), tokenizer, KEYROOM_OPTIONS, instances)
    return str(folder)


def tiny_overrides(model_dir: str, out_dir: Path, name: str = "t", **extra) -> list[str]:
    """CLI-style overrides for a fast fit on KeyRoom with a tiny model."""
    base = {
        "name": name, "out_dir": str(out_dir), "model.name_or_path": model_dir,
        "env.options": "{num_rooms: 3, objects_per_room: 2, max_turns: 4, num_train: 8, num_test: 4}",
        "rollout.tasks_per_iteration": 2, "rollout.group_size": 4, "rollout.max_new_tokens": 8,
        "rollout.max_prompt_tokens": 1024, "optim.lr": 1e-3, "optim.mini_batch_size": 8,
        "optim.micro_batch_size": 4, "logging.progress_bar": False, "trainer.max_epochs": 2,
        "trainer.enable_model_summary": False, "trainer.deterministic": True, "memory.tip_max_tokens": 16,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def child_env(*paths: Path) -> dict[str, str]:
    """The environment of a child Python process: one thread, the repository (and `paths`) first on
    its import path, ahead of whatever PYTHONPATH this process was given."""
    import os

    root = Path(__file__).resolve().parents[1]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(root), *map(str, paths), *inherited]))


def fit_processes(overrides: list[str], timeout: int = 900) -> None:
    """`python -m empo2.fit` in a child process (Lightning launches the other ranks from it)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "empo2.fit", *overrides], cwd=root, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]


def assert_memory_written_once(run_dir: Path, episodes: list[dict]) -> None:
    """The run's memory holds exactly the distinct entries of all ranks' episodes, each once, and
    its novelty table exactly the states that earned the full bonus (n_t = 1) on any rank."""
    from empo2.memory import MemoryStore, entry_content, memory_dir
    from empo2.novelty import NoveltyTable

    expected = {(ep["instance"], entry_content(ep["tip"], s["action"], ep["return"]))
                for ep in episodes if ep["tip"] for s in ep["steps"]}
    store = MemoryStore(memory_dir(run_dir))
    stored = [(slot, c) for slot in store.counts() for c in store.table.rows(slot).contents]
    assert expected and len(stored) == len(set(stored)) == len(expected) and set(stored) == expected
    novel = sum(1 for ep in episodes for s in ep["steps"] if s["intrinsic"] == 1.0)
    assert sum(NoveltyTable(memory_dir(run_dir)).counts().values()) == novel


@pytest.fixture(autouse=True)
def _fixed_threads():
    torch.set_num_threads(2)
    yield


def fixed_rows_datamodule(rows):
    """A datamodule serving one optimizer step over given rows (old log-probs from the module)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from empo2.training_rows import segments

    class FixedRows(L.LightningDataModule):
        def train_dataloader(self):
            module = self.trainer.lightning_module
            logps = module.compute_logprobs([r.train_prompt for r in rows], [r.response_ids for r in rows])
            for row, lp in zip(rows, logps):
                row.old_logprobs = lp
            segs = segments(rows, shared=module.shared_sequences)
            return DataLoader(segs, batch_sampler=[list(range(len(segs)))], collate_fn=lambda b: b)

    return FixedRows()


def one_sgd_step(cfg, rows: list, lr: float):
    """The real module after one PPO step through `training_step` on `rows`, with plain SGD (the
    weight change is exactly −lr × the gradient) in place of AdamW."""
    import lightning as L

    from empo2.module import EMPO2Module

    class SGDModule(EMPO2Module):
        def configure_optimizers(self):
            return torch.optim.SGD(self.trainable_parameters(), lr=lr)

    module = SGDModule(cfg)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, datamodule=fixed_rows_datamodule(rows))
    return module
