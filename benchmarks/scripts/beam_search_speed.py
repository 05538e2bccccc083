"""Users per second of the next-item scorer (trie-constrained beam search over the catalog) on this machine.

    python benchmarks/scripts/beam_search_speed.py [--users 16] [--batch-size 8] [--repeats 3]

The default next-item recipe's model with an untrained LoRA head, its first test users, the product's
``predict`` loop and the task's scorer (10 beams, top 10, each user's history excluded). Each repeat prints
the time and the first user's ranked entries, so two versions of the code can be checked to rank alike.
"""

import argparse
import time

from peftrec.batching import make_loader
from peftrec.fastpaths import VARIANTS, Bench
from peftrec.train import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench = Bench.from_overrides("recipe=lora_generative")
    model = bench.accelerator.prepare(bench.model(VARIANTS["fast"]))
    rows = bench.test_rows.select(range(args.users))
    score = bench.task.scorer(bench.examples["test"].iloc[: args.users])
    for repeat in range(args.repeats):
        loader = make_loader(rows, bench.tokenizer, batch_size=args.batch_size, train=False)
        start = time.perf_counter()
        outputs, _ = predict(model, bench.accelerator.prepare(loader), score, bench.accelerator)
        took = time.perf_counter() - start
        print(
            f"repeat {repeat}: {args.users} users in {took:.2f} s = {args.users / took:.2f} users/s "
            f"({bench.device_name or bench.device}); first user's top 5 entries {outputs[0][:5].tolist()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
