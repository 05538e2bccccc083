"""Find, on any machine, the places where a training or evaluation step would make the host wait for a GPU.

A GPU runs the work the host queues while the host goes on; reading a value back (``.item()``,
``bool()``, ``.tolist()``, ``.cpu()``) makes the host wait until everything queued before it is done.
On a GPU, ``torch.cuda.set_sync_debug_mode`` reports these waits (the fast-paths bench counts them,
:class:`peftrec.fastpaths.HostWaits`). A CPU has no queue to wait for, so this module marks the batch as
device data instead: every host read of a marked tensor, or of anything computed from one, is logged with
the step it happened in and the line of code that asked for it.

What it cannot see: a small tensor built from host values at each step (``torch.tensor(ids,
device=...)``), which on a GPU is a copy that waits too; and reads of tensors that no marked input flowed
into (the frozen weights, the optimizer's own state).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

# Tensor methods that hand a value to the host (on a GPU, each waits for the device).
HOST_READS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__format__"}
)
_OWN_FILES = (str(Path(torch.__file__).parent), __file__)


@dataclass
class HostReadLog:
    """The host reads seen while recording: ``(step, operation, site)`` in order of occurrence."""

    reads: list[tuple[int, str, str]] = field(default_factory=list)
    step: int = 0

    def per_step(self, steps: range) -> float:
        """Mean reads per step over ``steps``."""
        return sum(1 for step, _, _ in self.reads if step in steps) / max(len(steps), 1)

    def sites(self, steps: range) -> dict[str, int]:
        """How many reads each line of code made over ``steps``, most first."""
        return dict(Counter(site for step, _, site in self.reads if step in steps).most_common())


class DeviceMarked(torch.Tensor):
    """A tensor that stands for one on a GPU: host reads of it, or of what is computed from it, are logged."""

    log: HostReadLog | None = None

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if cls.log is not None and name in HOST_READS:
            cls.log.reads.append((cls.log.step, name, _caller()))
        result = super().__torch_function__(func, types, args, kwargs or {})
        if name == "cpu":  # on the host now: reading it again costs nothing
            with torch._C.DisableTorchFunctionSubclass():
                return result.as_subclass(torch.Tensor)
        return result


def mark(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch with every tensor marked as device data."""
    return {k: v.as_subclass(DeviceMarked) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def mark_loader(loader: DataLoader) -> DataLoader:
    """Have the loader collate marked batches (before Accelerate moves them; it keeps the mark)."""
    collate = loader.collate_fn
    loader.collate_fn = lambda rows: mark(collate(rows))
    return loader


@contextlib.contextmanager
def recording_host_reads() -> Iterator[HostReadLog]:
    """Log the host reads of marked tensors while the block runs; set ``log.step`` as steps begin."""
    log = HostReadLog()
    DeviceMarked.log = log
    try:
        yield log
    finally:
        DeviceMarked.log = None


def _caller() -> str:
    """The innermost line outside torch and this module, as ``package/module.py:line``."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_FILES):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = Path(frame.f_code.co_filename)
    root = path.parent  # above the outermost package that holds the file: transformers/..., peftrec/...
    while (root / "__init__.py").exists():
        root = root.parent
    return f"{path.relative_to(root).as_posix()}:{frame.f_lineno}"
