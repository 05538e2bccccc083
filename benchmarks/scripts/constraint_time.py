"""Time the catalog constraint, the logits mask of trie-constrained beam search, per decoding step.

    python benchmarks/scripts/constraint_time.py

The default next-item recipe's real catalog trie (MovieLens-100K titles, SmolLM2's tokenizer and
vocabulary), 32 users x 10 beams = 320 rows, each user with 50 excluded entries (a history), rows that
are real title prefixes, at several numbers of generated tokens. On a CPU the time is the whole call;
on a GPU it is the host's time to queue it (the mask is computed on the device, nothing is read back),
and the script synchronizes once after the repeats to include the device's time.
"""

import argparse
import time

import numpy as np
import torch
from transformers import AutoConfig

from peftrec.fastpaths import Bench
from peftrec.tasks.catalog_trie import CatalogConstraint

PROMPT = 8  # prompt columns before the generated ones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    bench = Bench.from_overrides("recipe=lora_generative")
    # The logits' width is the model's output size, which can differ from the tokenizer's length.
    trie, vocab = bench.task.trie, AutoConfig.from_pretrained(bench.model_path).vocab_size
    rng = np.random.default_rng(0)
    targets = [trie.target(entry)[:-1] for entry in range(len(trie))]
    print(
        f"catalog: {len(trie)} entries, {trie.num_nodes} trie nodes, longest title {trie.max_length - 1} tokens"
    )
    rows = args.users * args.beams
    excluded = [set(rng.choice(len(trie), size=50, replace=False).tolist()) for _ in range(args.users)]
    for width in (0, 5, 10, 20):
        long_enough = [t for t in targets if len(t) > width]
        picks = rng.integers(len(long_enough), size=rows)
        generated = [[0] * PROMPT + long_enough[i][:width] for i in picks]
        ids = torch.tensor(generated, dtype=torch.long, device=args.device)
        scores = torch.zeros(rows, vocab, device=args.device)
        constraint = CatalogConstraint(trie, PROMPT, num_beams=args.beams, excluded=excluded)
        constraint(ids, scores)  # builds the device copy of the trie once, as generate's first step does
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.repeats):
            constraint(ids, scores)
        queued = time.perf_counter() - start
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        done = time.perf_counter() - start
        print(
            f"{rows} rows, {width:2d} generated tokens: {1e3 * done / args.repeats:.2f} ms a call "
            f"({1e3 * queued / args.repeats:.2f} ms of it to return to the host)"
        )


if __name__ == "__main__":
    main()
