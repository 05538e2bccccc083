"""The run record: everything needed to trust, compare and reproduce one run's numbers."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import torch

from peftrec import __version__
from peftrec.atomic import write_bytes_atomic

PACKAGES = (
    "peftrec",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "hydra-core",
    "numpy",
    "scikit-learn",
)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON through a temporary file and ``os.replace``, so a crash never leaves half a file."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            # peftrec run from a source tree that is not installed (as on a lent GPU machine)
            versions[name] = __version__ if name == "peftrec" else None
    return versions


def git_commit() -> dict[str, Any]:
    """The peftrec source commit and whether the tree had uncommitted changes.

    Outside a checkout: ``$PEFTREC_SOURCE_COMMIT`` if set (the commit the tree was copied from), else None;
    ``dirty`` is then unknown (None)."""
    source = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        # A copy of the tree without its .git (a lent GPU machine): the commit its sender named, if any.
        return {"commit": os.environ.get("PEFTREC_SOURCE_COMMIT") or None, "dirty": None}
    return {"commit": sha, "dirty": bool(dirty)}


def device_info(device: torch.device) -> dict[str, Any]:
    """Name the hardware the numbers were measured on."""
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name, memory_gib=round(props.total_memory / 2**30, 1), count=torch.cuda.device_count()
        )
    else:
        info.update(name=_cpu_name(), logical_cores=os.cpu_count())
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (GPU only; process RSS peaks cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


class MemoryMonitor:
    """Peak and average memory of one phase (training or evaluation), sampled once per step.

    On CUDA each sample is the step's peak allocated memory (the peak counter is reset after every
    sample), so the phase's peak is the largest step and ``average_gib`` the mean step: with
    length-grouped batches the two differ, and the average says what a typical step needs. On CPU the
    sample is the process's resident set size after the step, and the peak is the process's peak RSS
    (which no call can reset: it covers everything the process did before, too).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.allocated: list[int] = []
        self.reserved: list[int] = []
        self.process = psutil.Process()
        reset_peak_memory(device)

    def step(self) -> None:
        """Record the step just finished and start the next step's window."""
        if self.device.type == "cuda":
            self.allocated.append(torch.cuda.max_memory_allocated(self.device))
            self.reserved.append(torch.cuda.max_memory_reserved(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.allocated.append(self.process.memory_info().rss)

    def summary(self) -> dict[str, Any]:
        """:func:`peak_memory`'s fields over the phase, plus ``average_gib`` (the mean step) and ``steps``."""
        if self.device.type == "cuda":
            # What ran after the last step (e.g. a final validation) counts towards the peak, not the average.
            allocated = [*self.allocated, torch.cuda.max_memory_allocated(self.device)]
            reserved = [*self.reserved, torch.cuda.max_memory_reserved(self.device)]
            summary = {
                "kind": "cuda_max_allocated",
                "gib": round(max(allocated) / 2**30, 3),
                "reserved_gib": round(max(reserved) / 2**30, 3),
            }
        else:
            summary = peak_memory(self.device)
            if self.allocated:  # ru_maxrss can lag the RSS psutil read at a step
                summary["gib"] = max(summary["gib"], round(max(self.allocated) / 2**30, 3))
        if self.allocated:
            summary["average_gib"] = round(sum(self.allocated) / len(self.allocated) / 2**30, 3)
        summary["steps"] = len(self.allocated)
        return summary


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory so far: GPU allocated/reserved on CUDA, else the process's peak resident set size.

    Returns:
        ``{"kind": ..., "gib": ...}`` plus reserved GiB on CUDA.
    """
    if device.type == "cuda":
        return {
            "kind": "cuda_max_allocated",
            "gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
            "reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 3),
        }
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if platform.system() == "Darwin" else 1024
    return {
        "kind": "process_peak_rss",
        "gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30, 3),
    }
