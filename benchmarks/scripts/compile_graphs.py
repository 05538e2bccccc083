"""How many graphs torch.compile traces for length-grouped LoRA batches (recompiles cost minutes on a GPU).

    python benchmarks/scripts/compile_graphs.py                    # peftrec's way: by region, dynamic shapes
    python benchmarks/scripts/compile_graphs.py --whole-model --dynamic true   # also: none (PyTorch's default), false

A tiny random Llama with LoRA on q,v (the shape of peftrec's default head) runs forward and backward on
batches of 12 lengths between 97 and 210 tokens, padded to a multiple of 8 (as peftrec's collator does),
and batch sizes 16, 16 and 7 (a last, smaller batch). Dynamo's counters then say how many graphs it traced
and how many frames it recompiled. The eager backend traces without compiling kernels, so the count is
the one inductor would compile, in seconds on a CPU.
"""

import argparse

import torch
from peft import LoraConfig, get_peft_model
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from peftrec.compiling import compile_model

LENGTHS = [97, 105, 113, 121, 130, 140, 151, 163, 170, 185, 199, 210]
BATCH_SIZES = [16, 16, 7]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole-model", action="store_true", help="one torch.compile of the whole model")
    parser.add_argument(
        "--dynamic", choices=["none", "true", "false"], default="true", help="with --whole-model"
    )
    parser.add_argument("--pad-to-multiple-of", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    if args.whole_model:
        dynamic = {"none": None, "true": True, "false": False}[args.dynamic]
        compiled = torch.compile(model, backend="eager", dynamic=dynamic)
    else:
        compiled = compile_model(model, mode="default", backend="eager")
    multiple = args.pad_to_multiple_of
    for length in LENGTHS:
        for batch_size in BATCH_SIZES:
            padded = -(-length // multiple) * multiple
            input_ids = torch.randint(0, config.vocab_size, (batch_size, padded))
            attention_mask = torch.ones_like(input_ids)
            attention_mask[:, length:] = 0
            out = compiled(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1)
            out.logits.float().sum().backward()
    stats = counters["stats"]
    print(
        f"{f'whole model, dynamic={args.dynamic}' if args.whole_model else 'by region, dynamic'}, "
        f"pad_to_multiple_of={multiple}: {len(LENGTHS) * len(BATCH_SIZES)} batches, "
        f"{stats.get('unique_graphs', 0)} graphs traced, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
