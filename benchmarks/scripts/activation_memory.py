"""Peak tensor memory of one LoRA click training step, without and with gradient checkpointing on every n-th layer.

    python benchmarks/scripts/activation_memory.py                        # batch 8, every 1, 2 and 4
    python benchmarks/scripts/activation_memory.py --batch-size 16 --every 1 4

The default recipe's model, head and real training rows (one length-grouped batch), in the run's precision.
The peak is counted on any device: every tensor storage an op creates during the forward and backward pass
is added when it is made and taken off when it is freed (a TorchDispatchMode with weak references, as
``torch.distributed._tools.mem_tracker`` does; that tracker needs every parameter to require a gradient, which a
frozen base does not). The frozen weights are not counted, so the number is what the step adds: activations
kept for the backward pass, its temporaries and the head's gradients. On a GPU this is the part of peak memory
that checkpointing changes; bf16 dropout keeps a float mask on a CPU and a one-byte mask on a GPU, so the
ratios carry over more closely than the bytes. Step times are the median of --repeats steps without the counter
(a shared 2-core CPU is noisy: its times order the variants at best, the GPU run measures the cost).
"""

import argparse
import statistics
import time
import weakref
from dataclasses import replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from peftrec.fastpaths import FAST, Bench
from peftrec.models import checkpointed_layers

MIB = 1 << 20


class PeakTensorMemory(TorchDispatchMode):
    """Counts the bytes of the tensor storages that ops create while it is active, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def _freed(self, nbytes: int) -> None:
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                if storage not in self.sizes:  # a view shares its base's storage: counted once
                    self.sizes[storage] = storage.nbytes()
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._freed, storage.nbytes())
                    self.peak = max(self.peak, self.current)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 4], help="checkpoint every n-th layer")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bench = Bench.from_overrides("recipe=lora_click")
    batch = bench.first_batch(FAST, args.batch_size)
    rows, length = batch["input_ids"].shape
    print(
        f"{bench.cfg.model.name}, LoRA, {bench.precision}, {bench.device.type}: one batch of {rows} x {length} tokens"
    )
    print("| checkpointing | peak tensor memory | x none | step seconds | x none |")
    print("|---|---|---|---|---|")
    reference = None
    for every in [None, *args.every]:
        variant = (
            FAST
            if every is None
            else replace(
                FAST, name="checkpointing", gradient_checkpointing=True, gradient_checkpointing_every=every
            )
        )
        model = bench.model(variant).to(bench.device)
        model.train()
        checkpointed = len(checkpointed_layers(model))

        def step(model=model) -> None:
            with bench.accelerator.autocast():
                loss = bench.task.loss(model, batch)
            loss.backward()
            model.zero_grad(set_to_none=True)

        step()  # warm: allocator, lazy initialisation
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        with PeakTensorMemory() as counter:
            step()
        reference = reference or (counter.peak, seconds)
        label = (
            "none"
            if every is None
            else f"every {every}: {checkpointed} of {model.config.num_hidden_layers} layers"
        )
        print(
            f"| {label} | {counter.peak / MIB:.0f} MiB | {counter.peak / reference[0]:.2f} | "
            f"{seconds:.2f} | {seconds / reference[1]:.2f} |"
        )
        del model


if __name__ == "__main__":
    main()
