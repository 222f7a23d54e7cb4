"""Peak memory per phase of an iteration, and a clear answer when a micro-batch does not fit.

Why per phase: an RL iteration holds very different things at different times (an engine's cache
during the rollout, an embedder during memory writes, activations during the update), and the
process-lifetime peak (`ru_maxrss`) says neither which phase set it nor whether later iterations
still reach it. On Linux the kernel keeps a resettable high-water mark of resident memory
(`VmHWM` in /proc/self/status, reset by writing 5 to /proc/self/clear_refs); each phase resets it
at its start and reads it at its end. Elsewhere the lifetime peak is reported (documented as such).
On CUDA the allocator's own peak is reported beside it.

Why phases start with `malloc_trim`: glibc keeps the memory a freed activation tensor occupied
inside the process heap, so after one update the resident set stays at the update's peak through
the next rollout (measured: 4.3 GB during the rollout of iteration 2 of the quickstart, against
1.6 GB in iteration 1). Handing free heap pages back to the kernel at each phase boundary costs a
few milliseconds and makes each phase's peak its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@functools.cache
def _glibc_malloc_trim():
    """glibc's `malloc_trim`, or None where the C library is not glibc (looked up once: finding the
    library may run `ldconfig`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Return the heap's free pages to the kernel (glibc); a no-op elsewhere."""
    trim = _glibc_malloc_trim()
    if trim is not None:
        trim(0)


def _resettable() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """High-water marks of this process, reset at the start of each measured phase."""

    def __init__(self) -> None:
        self.resettable = sys.platform.startswith("linux") and _resettable()
        """True: `rss_mb` is the peak since the last `reset`; False: since the process started."""

    def reset(self) -> None:
        """Start a phase: free heap pages go back to the kernel, then the high-water mark restarts."""
        release_free_heap()
        if self.resettable:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                self.resettable = False
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def rss_mb(self) -> float:
        """Peak resident set size in MB (since `reset` where resettable)."""
        if self.resettable:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB on Linux

    def cuda_mb(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0

    def metrics(self, phase: str) -> dict[str, float]:
        """`memory/<phase>_peak_rss_mb` (and `..._peak_cuda_mb` on GPU) for the phase just ended."""
        out = {f"memory/{phase}_peak_rss_mb": self.rss_mb()}
        if torch.cuda.is_available():
            out[f"memory/{phase}_peak_cuda_mb"] = self.cuda_mb()
        return out


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)  # torch's CPU allocator


@contextmanager
def out_of_memory_hint(budget_tokens: int) -> Iterator[None]:
    """Re-raise an allocation failure inside a forward/backward with the knobs that bound it."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        raise MemoryError(
            f"out of memory in a micro-batch of up to {budget_tokens} tokens: lower "
            f"optim.max_tokens_per_micro_batch (and rollout.max_prompt_tokens, which bounds one row), or set "
            f"model.gradient_checkpointing=true, or compute in bf16 (trainer.precision=bf16-mixed; "
            f"sharding.mixed_precision=bf16 under fsdp/fsdp2)"
        ) from err
