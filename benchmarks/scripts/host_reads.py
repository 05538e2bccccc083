"""Where a training step and an evaluation batch of a recipe read device values on the host.

    python benchmarks/scripts/host_reads.py                        # recipe=lora_click
    python benchmarks/scripts/host_reads.py recipe=lora_generative --steps 4

On a GPU each such read makes the host wait for the device's queued work (the fast-paths bench counts
the waits there with torch.cuda's sync debug mode). This runs on any machine: the recipe's real model,
rows and task loss go through the product's training loop and scorer with every batch marked as device
data (:mod:`peftrec.host_reads`), and every host read of it, or of what was computed from it, is counted
by the line of code that made it.
"""

import argparse

import torch
from hydra.utils import instantiate

from peftrec.batching import make_loader
from peftrec.fastpaths import VARIANTS, Bench
from peftrec.host_reads import mark_loader, recording_host_reads
from peftrec.train import TrainSettings, predict, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["recipe=lora_click"])
    parser.add_argument("--steps", type=int, default=6, help="training steps (the first is not counted)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--log-every", type=int, default=10, help="the loop's trainer.log_every")
    args = parser.parse_args()
    bench = Bench.from_overrides(*args.overrides)
    cfg = bench.cfg
    fast = VARIANTS["fast"]
    model = bench.model(fast)
    loader = bench.loader(fast, args.batch_size)
    mark_loader(loader)
    optimizer = instantiate(cfg.trainer.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
    model, optimizer, loader = bench.accelerator.prepare(model, optimizer, loader)

    with recording_host_reads() as log:

        def loss(model, batch):
            log.step += 1
            return bench.task.loss(model, batch)

        train(
            model,
            loss_fn=loss,
            train_loader=loader,
            validate=None,
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
            accelerator=bench.accelerator,
            settings=TrainSettings(
                args.steps, args.steps, args.log_every, cfg.trainer.max_grad_norm, "none", True
            ),
        )
    counted = range(2, args.steps + 1)
    print(
        f"training ({cfg.task.name}, {cfg.model.name}, steps 2-{args.steps} of {args.batch_size} rows, "
        f"log every {args.log_every}): {log.per_step(counted):.2f} host reads a step"
    )
    for site, n in log.sites(counted).items():
        print(f"  {n:4d}  {site}")

    rows = bench.test_rows.select(range(min(4 * args.batch_size, len(bench.test_rows))))
    test_loader = make_loader(rows, bench.tokenizer, batch_size=args.batch_size, train=False)
    mark_loader(test_loader)
    score = bench.task.scorer(bench.examples["test"].iloc[: len(rows)])
    with recording_host_reads() as log:

        def scored(model, batch):
            log.step += 1
            return score(model, batch)

        predict(model, bench.accelerator.prepare(test_loader), scored, bench.accelerator)
    batches = range(1, log.step + 1)
    print(
        f"evaluation ({log.step} batches of {args.batch_size} rows): {log.per_step(batches):.2f} host reads a "
        "batch, counting the transfer of every score at the end"
    )
    for site, n in log.sites(batches).items():
        print(f"  {n:4d}  {site}")
    ends = [s for s, _, _ in log.reads if s == log.step]
    print(f"  (of which {len(ends)} in or after the last batch)")


if __name__ == "__main__":
    main()
