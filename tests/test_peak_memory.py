"""Peak memory per phase follows what the phase allocates; allocation failures name the knobs."""

import pytest
import torch

from empo2.peak_memory import PeakMemory, out_of_memory_hint


def test_phase_peak_follows_the_phase():
    peak = PeakMemory()
    if not peak.resettable:
        pytest.skip("no resettable high-water mark outside Linux")
    peak.reset()
    quiet = peak.rss_mb()
    block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
    loud = peak.rss_mb()
    del block
    peak.reset()
    after = peak.rss_mb()
    assert loud - quiet >= 60  # the phase that allocated 64 MB reports them
    assert after < loud - 30  # a new phase does not inherit the old peak (freed pages went back)
    assert set(peak.metrics("update")) >= {"memory/update_peak_rss_mb"}


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
])
def test_out_of_memory_names_the_knobs(error):
    with pytest.raises(MemoryError) as caught:
        with out_of_memory_hint(2048):
            raise error
    assert str(caught.value) == (
        "out of memory in a micro-batch of up to 2048 tokens: lower optim.max_tokens_per_micro_batch (and "
        "rollout.max_prompt_tokens, which bounds one row), or set model.gradient_checkpointing=true, or compute in "
        "bf16 (trainer.precision=bf16-mixed; sharding.mixed_precision=bf16 under fsdp/fsdp2)")


def test_other_errors_pass_through():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with out_of_memory_hint(2048):
            raise RuntimeError("shape mismatch")
