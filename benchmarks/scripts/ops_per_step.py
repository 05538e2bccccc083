"""Operations one LoRA click training step dispatches, by phase: the kernel launches a GPU step pays the host for.

    python benchmarks/scripts/ops_per_step.py                              # baseline and fast
    python benchmarks/scripts/ops_per_step.py --variants fast gradient_checkpointing trainer.precision=fp32

The default recipe's model, head and real training rows, one batch as each fast-paths variant builds it,
in the run's precision, eagerly as ``python -m peftrec.fastpaths`` trains it: the forward pass and loss under
autocast, the backward pass, then clipping and the optimizer step (AdamW and clipping with ``foreach=True``,
torch's choice on a GPU, so the counts are a GPU's). Every ATen operation the step dispatches is counted;
operations that launch no kernel (views, allocations, the optimizer's reads of its step counts, which live
on the host, profiler markers) are counted apart. The counts depend neither on the device nor on the
machine's load, nor on the batch's size (8 rows by default, for a CPU's memory; 64 count the same): on a GPU each of the others is at least one kernel launch, each
paid for by the host (Python, the dispatcher, the launch) whether the kernel is large or tiny. A step's time
divided by its count is then the host's time per operation where the step is bound by the host.
"""

import argparse
from collections import Counter

import torch
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode

from peftrec.fastpaths import VARIANTS, Bench, hf_lm_loss

PHASES = ("forward", "backward", "optimizer")
# No kernel behind them: allocations, reads of host scalars (AdamW's step counts), profiler markers.
NO_KERNEL = {"aten.empty.memory_format", "aten.empty_strided.default", "aten._local_scalar_dense.default",
             "aten.lift_fresh.default", "profiler._record_function_enter_new.default",
             "profiler._record_function_exit._RecordFunction"}  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations dispatched while it is active, by phase, those without a kernel apart."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = PHASES[0]
        self.ops: Counter[str] = Counter()
        self.views: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        (self.views if func.is_view or str(func) in NO_KERNEL else self.ops)[self.phase] += 1
        return func(*args, **(kwargs or {}))


def count_one_step(bench: Bench, name: str, batch_size: int) -> tuple[tuple[int, ...], OpCounter]:
    """Variant ``name``'s model, optimizer and first batch: one step to warm up (the optimizer creates its
    state), then one counted. Returns the batch shape and the counts."""
    variant = VARIANTS[name]
    full_lm = variant.loss == "full_lm"
    batch = bench.first_batch(variant, batch_size)
    model = bench.model(variant).to(bench.device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = instantiate(bench.cfg.trainer.optimizer)(params=trainable, foreach=True)
    loss_fn = hf_lm_loss if full_lm else bench.task.loss
    counter = OpCounter()

    def step() -> None:
        counter.phase = "forward"
        with bench.accelerator.autocast():
            loss = loss_fn(model, batch)
        counter.phase = "backward"
        loss.backward()
        counter.phase = "optimizer"
        torch.nn.utils.clip_grad_norm_(trainable, bench.cfg.trainer.max_grad_norm, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with counter:
        step()
    return tuple(batch["input_ids"].shape), counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["baseline", "fast"], choices=sorted(VARIANTS))
    parser.add_argument(
        "overrides", nargs="*", help="fast-paths config overrides (trainer.precision=fp32 ...)"
    )
    args = parser.parse_args()
    bench = Bench.from_overrides("recipe=lora_click", *args.overrides)
    print(
        f"{bench.cfg.model.name}, LoRA, {bench.precision}: one training step of {args.batch_size} real rows"
    )
    print("| variant | batch | forward | backward | clip + optimizer | ops a step | no kernel |")
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants:
        shape, counter = count_one_step(bench, variant, args.batch_size)
        print(
            f"| {variant} | {shape[0]} x {shape[1]} | "
            + " | ".join(f"{counter.ops[phase]:,}" for phase in PHASES)
            + f" | {sum(counter.ops.values()):,} | {sum(counter.views.values()):,} |"
        )


if __name__ == "__main__":
    main()
