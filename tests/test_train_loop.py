"""The training loop's optimizer step: the gradient of the head is clipped as a whole, frozen weights stay."""

from __future__ import annotations

import copy

import torch
from test_resume import train_on_cpu

from peftrec.train import TrainSettings


def test_one_step_clips_the_head_gradient_to_max_grad_norm_and_leaves_frozen_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[0].requires_grad_(False)  # the frozen base
    batches = [{"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)}]

    def loss_fn(model, batch):
        return 100 * model(batch["input_ids"].float()).sum()

    # The unclipped gradient, from a copy: a norm far above 0.5.
    reference = copy.deepcopy(model)
    loss_fn(reference, batches[0]).backward()
    raw = torch.cat([p.grad.flatten() for p in reference[1].parameters()])
    assert raw.norm() > 10
    before = [p.detach().clone() for p in model.parameters()]

    train_on_cpu(
        model,
        batches,
        loss_fn,
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0),
        TrainSettings(
            1, eval_every=1, log_every=1, max_grad_norm=0.5, select_metric="auc", higher_is_better=True
        ),
        validate=None,
    )
    after = list(model.parameters())
    torch.testing.assert_close(after[0], before[0])  # frozen weight and bias unchanged
    torch.testing.assert_close(after[1], before[1])
    step = torch.cat([(b - a).flatten() for a, b in zip(after[2:], before[2:], strict=True)])
    # SGD at lr 1 moves the head by its clipped gradient: the raw direction, at norm 0.5.
    torch.testing.assert_close(step, raw * (0.5 / raw.norm()), rtol=1e-5, atol=1e-6)
