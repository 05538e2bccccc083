"""What a head needs from the training loop beyond the task loss (AdaLoRA: rank allocation, orthogonality).

Most heads need nothing. The runner asks :func:`training_hooks` once, after attaching the head, and
hands the loop what it returns, so the loop stays method-agnostic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel, PeftType

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class TrainingHooks:
    """A head's additions to the training loop.

    Attributes:
        after_optimizer_step: called with the number of optimizer steps taken, right after each
            optimizer step and before the gradients are cleared (``train(after_optimizer_step=...)``).
        regularizer: a penalty added to the task loss at every forward pass.
        state: the head's own training state beyond its weights (``state_dict``/``load_state_dict``),
            saved in resumable checkpoints: AdaLoRA's importance averages and rank pattern.
    """

    after_optimizer_step: Callable[[int], None] | None = None
    regularizer: Callable[[], torch.Tensor] | None = None
    state: Any = None

    def wrap_loss(self, loss_fn: LossFn) -> LossFn:
        """The task loss plus the head's regularizer (the task loss itself when there is none)."""
        regularizer = self.regularizer
        if regularizer is None:
            return loss_fn

        def loss_with_penalty(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
            return loss_fn(model, batch) + regularizer()

        return loss_with_penalty


def training_hooks(model: torch.nn.Module) -> TrainingHooks:
    """The hooks the head on ``model`` needs (none for most heads).

    AdaLoRA (Zhang et al., 2023) reallocates its rank budget from gradient-based importance after
    every optimizer step (``update_and_allocate``), and keeps its P and Q factors near-orthogonal with
    a penalty. peft adds that penalty only to a loss the model computes itself from ``labels``;
    peftrec's tasks score the label words themselves, so the penalty is added here instead.

    Args:
        model: the model returned by :func:`peftrec.methods.apply_head`.

    Returns:
        The hooks; fields are None where the head needs nothing.
    """
    if not isinstance(model, PeftModel) or model.active_peft_config.peft_type != PeftType.ADALORA:
        return TrainingHooks()
    tuner = model.base_model
    config = model.active_peft_config
    if config.tfinal < 1:
        log.warning(
            "AdaLoRA with tfinal=%d never fixes its final rank pattern within total_step=%d steps; "
            "set peft.tfinal >= 1",
            config.tfinal,
            config.total_step,
        )

    def allocate(step: int) -> None:
        # peft counts global_step from 0 (its examples call it before incrementing), we count steps taken.
        tuner.update_and_allocate(step - 1)

    regularizer = None
    if config.orth_reg_weight > 0:
        # (right singular vectors?, factor): A is r x in, B is out x r.
        factors = [
            ("lora_A" in n, p)
            for n, p in model.named_parameters()
            if p.requires_grad and ("lora_A" in n or "lora_B" in n)
        ]

        def regularizer() -> torch.Tensor:
            return config.orth_reg_weight * orthogonality_penalty(factors)

    return TrainingHooks(
        after_optimizer_step=allocate, regularizer=regularizer, state=AdaLoraAllocatorState(tuner, config)
    )


class AdaLoraAllocatorState:
    """AdaLoRA's rank allocator state, for checkpoints: without it a resumed run would restart the
    importance averages from zero and prune different ranks than an uninterrupted run."""

    _FIELDS = ("ipt", "exp_avg_ipt", "exp_avg_unc")

    def __init__(self, tuner: Any, config: Any):
        self.tuner, self.config = tuner, config

    def state_dict(self) -> dict[str, Any]:
        """The allocator's per-parameter averages (CPU copies) and the config's current rank pattern."""
        allocator = self.tuner.rankallocator
        state: dict[str, Any] = {
            name: {k: v.detach().to("cpu", copy=True) for k, v in getattr(allocator, name).items()}
            for name in self._FIELDS
        }
        state["rank_pattern"] = self.config.rank_pattern
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a :meth:`state_dict` back (tensors onto the head's device)."""
        allocator = self.tuner.rankallocator
        device = next(p.device for p in self.tuner.parameters())
        for name in self._FIELDS:
            setattr(allocator, name, {k: v.to(device) for k, v in state[name].items()})
        self.config.rank_pattern = state["rank_pattern"]


def orthogonality_penalty(factors: list[tuple[bool, torch.Tensor]]) -> torch.Tensor:
    """AdaLoRA's R(P, Q): the mean over factors of ||F F^T - I||_F (rows of A) or ||F^T F - I||_F (columns of B).

    The same value peft's ``AdaLoraModel.forward`` adds when it computes the loss itself.

    Args:
        factors: ``(is_lora_A, tensor)`` pairs: A is ``r x in``, B is ``out x r``.

    Returns:
        A scalar tensor (0 when there are no factors).
    """
    if not factors:
        return torch.zeros(())
    total = factors[0][1].new_zeros(())
    for is_a, p in factors:
        gram = p @ p.T if is_a else p.T @ p
        eye = torch.eye(gram.shape[0], device=p.device, dtype=p.dtype)
        total = total + torch.linalg.matrix_norm(gram - eye)
    return total / len(factors)
