"""How long building one training batch takes: transformers' padding collator against peftrec's.

    python benchmarks/scripts/collate_speed.py                     # recipe=lora_click, batches of 64 and 256
    python benchmarks/scripts/collate_speed.py recipe=lora_generative --batch-sizes 64

The rows are the recipe's real training rows (default model's tokenizer, default data and split), drawn in
the training loop's length-grouped order. Each collator builds the same batches, which are checked equal;
the time per batch is the median over the batches, in the main process (as the fast-paths bench loads).
"""

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from peftrec.batching import EpochLengthGroupedSampler, model_columns, padding_collator
from peftrec.fastpaths import Bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["recipe=lora_click"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    bench = Bench.from_overrides(*args.overrides)
    rows, tokenizer = bench.train_rows, bench.tokenizer
    token_labels = isinstance(rows[0]["labels"], list)
    reference = (
        DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=8)
        if token_labels
        else DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    )
    collators = {"transformers": reference, "peftrec": padding_collator(tokenizer, pad_to_multiple_of=8)}
    for batch_size in args.batch_sizes:
        batches, times = {}, {}
        for name, collate in collators.items():
            loader = DataLoader(
                model_columns(rows),
                batch_size=batch_size,
                sampler=EpochLengthGroupedSampler(batch_size, rows["length"], seed=0),
                collate_fn=collate,
            )
            batches[name], times[name] = [], []
            iterator = iter(loader)
            for _ in range(args.batches):
                start = time.perf_counter()
                batches[name].append(next(iterator))
                times[name].append(time.perf_counter() - start)
        for ours, theirs in zip(batches["peftrec"], batches["transformers"], strict=True):
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), (
                "the collators built different batches"
            )
        median = {name: 1000 * statistics.median(t) for name, t in times.items()}
        print(
            f"batch {batch_size} ({bench.cfg.task.name}, {args.batches} batches, same tensors): transformers "
            f"{median['transformers']:.1f} ms, peftrec {median['peftrec']:.1f} ms per batch "
            f"({median['transformers'] / median['peftrec']:.1f}x)"
        )


if __name__ == "__main__":
    main()
