"""How peftrec compiles a model: ``torch.compile`` by region, with dynamic shapes.

Regional compilation (Accelerate's ``compile_regions``, PyTorch's "regional compilation" recipe) compiles
one decoder layer and reuses its code for every layer of the stack, so a 30-layer model compiles about as
fast as a one-layer one; the embedding, final norm and output layer are compiled on their own. Shapes are
dynamic because length-grouped batches vary in length from step to step.
"""

from __future__ import annotations

import torch
from accelerate.utils import TorchDynamoPlugin, compile_regions
from omegaconf import DictConfig

from peftrec.errors import PeftrecError

# torch.compile's modes (``torch._inductor.list_mode_options``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str) -> str:
    """``mode`` if torch.compile knows it, else an error that lists the modes."""
    if mode not in COMPILE_MODES:
        raise PeftrecError(
            f"trainer.compile_mode={mode!r} is not a torch.compile mode: use one of {', '.join(COMPILE_MODES)}"
        )
    return mode


def compile_plugin(trainer_cfg: DictConfig) -> TorchDynamoPlugin | None:
    """Accelerate's compile settings for ``trainer.compile`` / ``trainer.compile_mode`` (None: eager).

    ``Accelerator.prepare`` then compiles the model by region, after wrapping it for mixed precision.
    """
    if not trainer_cfg.get("compile"):
        return None
    return TorchDynamoPlugin(
        backend="inductor",
        mode=check_compile_mode(trainer_cfg.get("compile_mode", "default")),
        dynamic=True,
        use_regional_compilation=True,
    )


def compile_model(model: torch.nn.Module, *, mode: str, backend: str = "inductor") -> torch.nn.Module:
    """The model compiled by region, as :func:`compile_plugin` has Accelerate do it (for code that
    compiles one model at a time under a shared ``Accelerator``, such as the fast-paths bench).

    The returned module shares its parameters with ``model``; ``unwrap_model(..., keep_torch_compile=False)``
    gives ``model`` back, whose parameter names (unlike the compiled layers') have no ``_orig_mod.``.
    """
    check_compile_mode(mode)
    # A mode is inductor's setting; other backends (eager, aot_eager: tracing without compiling) take none.
    modes = {"mode": mode} if backend == "inductor" else {}
    return compile_regions(model, backend=backend, dynamic=True, **modes)
