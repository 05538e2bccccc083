"""Host time of one gradient clip over the whole model's parameters against the head's trainable list.

    python benchmarks/scripts/clip_host_time.py

The training loop clips at every optimizer step. ``accelerator.clip_grad_norm_(model.parameters())`` walks
every parameter of the model, frozen ones included, in Python; the loop now passes the trainable list it
builds once. SmolLM2-135M with LoRA r=8 on q/v, gradients of zeros, on this machine's CPU.
"""

import time

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model

from peftrec.assets import resolve_model
from peftrec.models import load_base_model

REPEATS = 300


def main() -> None:
    base = load_base_model(resolve_model("smollm2-135m-instruct"), precision="fp32")
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.zeros_like(p)
    print(f"{len(list(model.parameters()))} parameters, {len(trainable)} trainable")
    for name, params in (("model.parameters()", model.parameters), ("trainable list", lambda: trainable)):
        start = time.perf_counter()
        for _ in range(REPEATS):
            accelerator.clip_grad_norm_(params(), 1.0)
        print(f"{name}: {(time.perf_counter() - start) / REPEATS * 1e3:.2f} ms per clip")


if __name__ == "__main__":
    main()
