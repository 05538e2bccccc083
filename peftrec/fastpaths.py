"""The fast training and evaluation paths, each measured beside the straightforward way in one run.

``python -m peftrec.fastpaths recipe=lora_click`` (any recipe; overrides as for ``python -m peftrec``)
trains the recipe's head several times from the same seed, on the same split and loop
(:func:`peftrec.train.train`), changing one thing at a time:

- ``baseline``: what TALLRec-style scripts do: the Hugging Face LM loss (``labels=``) over every
  position of prompt and answer (alpaca-lora's ``train_on_inputs``), so full-vocabulary logits for
  every token; every batch padded to one fixed length; shuffled without regard to length; eager attention.
- ``fast``: peftrec's path: the task's loss at the positions it reads (``logits_to_keep``: one row of
  label-word logits for click and rating, the title tokens for next-item), length-grouped batches padded
  to their own longest row, SDPA attention.
- ``full_lm_loss``, ``fixed_padding``, ``eager_attention``: ``fast`` with one part taken back;
  ``gradient_checkpointing``: ``fast`` with the knob on; ``checkpointing_every_4``: on every fourth decoder
  layer only (``model.gradient_checkpointing_every=4``);
- ``compile``: ``fast`` compiled by region (:mod:`peftrec.compiling`, dynamic shapes); ``cuda_graphs``: the
  same in torch.compile's ``reduce-overhead`` mode (CUDA graphs), batches padded to a multiple of 32 so
  few shapes are recorded. Steps in which a graph was compiled are left out of the timing and counted;
- ``<variant>_large_batch``: each of ``fastpaths.large_batch_variants`` again at ``fastpaths.large_batch_size``
  (throughput on a large GPU).

Every variant runs in the run's precision (bf16 where supported: TALLRec too trained in half precision).
Each gets samples/s and tokens/s over its timed steps (after ``warmup_steps``), peak and average memory,
MFU on a known GPU, and the test metric of the head it trained (the same fast scorer for all), so a fast
path that loses accuracy shows it. The timed window runs as the product loop does: the host waits for the
GPU only at its edges and where the loop itself reads a device value; on a GPU, ``host_waits`` counts
those reads per step and names the lines that made them.

Evaluation: label-word tasks are scored by one forward pass (the product's path) and by generation
(``model.generate`` on left-padded fixed-length batches, reading the first generated token's logits,
as TALLRec's evaluation does); both give the metric, their agreement and the speed ratio. Next-item
ranking compares batched trie-constrained beam search with one user at a time on the same users.

The record goes to ``<run folder>/fastpaths.json`` and a Markdown summary is printed; committed
records live in ``benchmarks/fastpaths/``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import hydra
import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, send_to_device, set_seed
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch._dynamo.utils import counters as dynamo_counters
from torch.utils.data import DataLoader, RandomSampler
from transformers import get_scheduler

from peftrec import metrics as metric_lib
from peftrec.assets import resolve_model
from peftrec.batching import make_loader, model_columns, padding_collator
from peftrec.compiling import compile_model
from peftrec.errors import PeftrecError
from peftrec.flops import mfu, model_shape, throughput_mfu
from peftrec.methods import apply_head, runtime_head_values
from peftrec.methods.generation_compat import check_multi_step_generation
from peftrec.models import checkpointed_layers, load_base_model, load_tokenizer, resolve_precision
from peftrec.paths import CONF_DIR
from peftrec.record import MemoryMonitor, device_info, git_commit, package_versions, write_json_atomic
from peftrec.run import (
    build_head_config,
    build_split,
    build_task,
    evaluation_frames,
    load_data,
    test_breakdown,
    use_cpu,
    with_ranking_inputs,
)
from peftrec.train import Throughput, TrainSettings, logit_positions, predict, train

log = logging.getLogger("peftrec.fastpaths")


@dataclass(frozen=True)
class Variant:
    """One way to train: which loss, padding, attention and knobs.

    Attributes:
        name: the variant's name in the record.
        loss: ``task`` (logits only where the task reads them) or ``full_lm`` (HF loss over every position).
        padding: ``grouped`` (length-grouped batches, each padded to its longest row) or ``fixed``.
        attention: ``sdpa`` or ``eager``.
        gradient_checkpointing: recompute activations in the backward pass.
        gradient_checkpointing_every: with ``gradient_checkpointing``, only every this many decoder layers.
        compile_mode: compile the model by region in this torch.compile mode (None: eager).
        pad_to_multiple_of: ``grouped`` batches are padded to their longest row rounded up to this.
        batch_size: rows per step (None: ``fastpaths.batch_size``).
    """

    name: str
    loss: str = "task"
    padding: str = "grouped"
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    gradient_checkpointing_every: int = 1
    compile_mode: str | None = None
    pad_to_multiple_of: int = 8
    batch_size: int | None = None


FAST = Variant("fast")
VARIANTS = {
    "baseline": Variant("baseline", loss="full_lm", padding="fixed", attention="eager"),
    "fast": FAST,
    "full_lm_loss": replace(FAST, name="full_lm_loss", loss="full_lm"),
    "fixed_padding": replace(FAST, name="fixed_padding", padding="fixed"),
    "eager_attention": replace(FAST, name="eager_attention", attention="eager"),
    "gradient_checkpointing": replace(FAST, name="gradient_checkpointing", gradient_checkpointing=True),
    "checkpointing_every_4": replace(
        FAST, name="checkpointing_every_4", gradient_checkpointing=True, gradient_checkpointing_every=4
    ),
    "compile": replace(FAST, name="compile", compile_mode="default"),
    "cuda_graphs": replace(FAST, name="cuda_graphs", compile_mode="reduce-overhead", pad_to_multiple_of=32),
}


@dataclass
class StepLog:
    """Per optimizer step: when the host finished it, what its batch held (rows, real and computed tokens),
    and how many graphs torch.compile traced during it (0 for an eager model).

    The ends are host times, as the training loop runs: the host waits for the device only where the loop
    does, and at the edges of the timed window (:func:`window_edge`), so the window holds all of its steps'
    device work. The real tokens and logit positions are counted on the device and read by :meth:`settle`
    after training, since reading them at each step would make the host wait there.
    """

    ends: list[float]
    rows: list[int]
    tokens: list[int | torch.Tensor]
    padded_tokens: list[int]
    logit_positions: list[int | torch.Tensor]
    new_graphs: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls) -> StepLog:
        return cls([], [], [], [], [])

    def settle(self) -> None:
        """Read the counts kept on the device (one transfer)."""
        kept = [n for n in (*self.tokens, *self.logit_positions) if isinstance(n, torch.Tensor)]
        read = iter(torch.stack(kept).double().tolist() if kept else [])

        def value(n: int | torch.Tensor) -> int:
            return round(next(read)) if isinstance(n, torch.Tensor) else n

        self.tokens = [value(n) for n in self.tokens]
        self.logit_positions = [value(n) for n in self.logit_positions]

    def timed_steps(self, warmup: int) -> list[int]:
        """The steps after the first ``warmup`` >= 1 in which no graph was compiled (each timed from the
        previous step's end, so the first step is never timed)."""
        if warmup < 1:
            return []
        graphs = self.new_graphs or [0] * len(self.ends)
        return [i for i in range(warmup, len(self.ends)) if not graphs[i]]

    def timed(self, warmup: int) -> Throughput:
        """Throughput of the steps after ``warmup`` >= 1, less those that compiled a graph."""
        steps = self.timed_steps(warmup)
        return Throughput(
            seconds=sum(self.ends[i] - self.ends[i - 1] for i in steps),
            samples=sum(self.rows[i] for i in steps),
            tokens=sum(self.tokens[i] for i in steps),
            logit_positions=sum(self.logit_positions[i] for i in steps),
        )

    def compiling(self, warmup: int) -> dict[str, Any]:
        """How many graphs were compiled, in how many steps, and how many of those steps came after the
        warmup (and so were left out of :meth:`timed`)."""
        return {
            "graphs_compiled": sum(self.new_graphs),
            "steps_compiling": sum(1 for n in self.new_graphs if n),
            "compiling_steps_not_timed": sum(1 for n in self.new_graphs[warmup:] if n),
        }


def traced_graphs() -> int:
    """Graphs torch.compile (Dynamo) has traced in this process so far."""
    return int(dynamo_counters["stats"]["unique_graphs"])


def full_lm_dataset(task: Any, dataset: datasets.Dataset) -> datasets.Dataset:
    """The baseline's training rows: prompt and answer as one sequence, ``labels`` on every token.

    Label-word tasks append the answer word's token to the prompt; next-item rows already end with the
    title. ``labels`` repeat the ``input_ids`` (the loss covers the prompt too, as alpaca-lora's default).
    """
    label_ids = getattr(task, "label_ids", None)  # next-item rows carry token-level labels instead

    def to_lm(row: Mapping[str, Any]) -> dict[str, Any]:
        ids = list(row["input_ids"])
        if not isinstance(row["labels"], list):  # one label word per row: append its token
            ids.append(label_ids[int(row["labels"])])
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids, "length": len(ids)}

    return dataset.map(to_lm, desc="Baseline rows", keep_in_memory=True)


def fixed_length(dataset: datasets.Dataset) -> int:
    """The length every baseline batch is padded to: the split's longest row, a multiple of 8.

    TALLRec pads to its cut-off (512 tokens); the longest row is kinder to the baseline.
    """
    return int(math.ceil(max(dataset["length"]) / 8) * 8)


def variant_loader(
    dataset: datasets.Dataset,
    tokenizer: Any,
    variant: Variant,
    *,
    batch_size: int,
    seed: int,
    pin_memory: bool = False,
) -> DataLoader:
    """Length-grouped loader (the product's) or shuffled fixed-length batches (the baseline's)."""
    if variant.padding == "grouped":
        return make_loader(
            dataset,
            tokenizer,
            batch_size=batch_size,
            train=True,
            seed=seed,
            pad_to_multiple_of=variant.pad_to_multiple_of,
            pin_memory=pin_memory,
        )
    return DataLoader(
        model_columns(dataset),
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
        collate_fn=padding_collator(tokenizer, max_length=fixed_length(dataset)),
        drop_last=False,
        pin_memory=pin_memory,
    )


def hf_lm_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The Hugging Face causal-LM loss: logits over the whole vocabulary at every position."""
    return model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss


def logged(loss_fn: Callable, steps: StepLog, full_lm: bool) -> Callable:
    """Wrap a loss so each batch's rows, real and computed tokens, and logit positions are logged."""

    def wrapped(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rows, length = batch["input_ids"].shape
        tokens = batch["attention_mask"].sum()  # read after training (StepLog.settle)
        steps.rows.append(rows)
        steps.tokens.append(tokens)
        steps.padded_tokens.append(rows * length)
        # The HF loss reads the vocabulary logits at every real position.
        steps.logit_positions.append(tokens if full_lm else logit_positions(batch))
        return loss_fn(model, batch)

    return wrapped


SYNC_WARNING = "called a synchronizing CUDA operation"  # torch.cuda's sync debug mode, c10/cuda


class HostWaits:
    """Counts, on a GPU, the operations that made the host wait for the device, by the line of Python that
    asked for each: ``torch.cuda.set_sync_debug_mode("warn")`` warns at every ``.item()``, ``.cpu()``,
    ``nonzero`` and the like (not at ``torch.cuda.synchronize``, which the bench calls itself).

    Counting is on between :meth:`start` and :meth:`stop` (the timed window), inside :meth:`recording`;
    other warnings are shown as usual. Off a GPU nothing is counted.
    """

    def __init__(self, device: torch.device):
        self.on_gpu = device.type == "cuda"
        self.sites: Counter[str] = Counter()
        self.counting = False

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Route the sync warnings to the count while the block runs (and leave debug mode off after it)."""
        if not self.on_gpu:
            yield
            return
        show = warnings.showwarning

        def count_or_show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            if self.counting and str(message).startswith(SYNC_WARNING):
                self.sites[f"{Path(filename).name}:{lineno}"] += 1
            else:
                show(message, category, filename, lineno, file, line)

        with warnings.catch_warnings():
            warnings.filterwarnings("always", message=SYNC_WARNING)
            warnings.showwarning = count_or_show
            try:
                yield
            finally:
                self.stop()

    def start(self) -> None:
        if self.on_gpu:
            torch.cuda.set_sync_debug_mode("warn")
            self.counting = True

    def stop(self) -> None:
        if self.on_gpu:
            torch.cuda.set_sync_debug_mode(0)
            self.counting = False

    def summary(self, steps: int) -> dict[str, Any] | None:
        """Waits per step over ``steps`` counted steps, and the lines that waited most; None off a GPU."""
        if not self.on_gpu:
            return None
        return {
            "per_step": round(sum(self.sites.values()) / max(steps, 1), 2),
            "steps_counted": steps,
            "sites": dict(self.sites.most_common(8)),
        }


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings must cover it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(accelerator: Accelerator, device: torch.device) -> None:
    """Drop the last variant's model, optimizer and loaders from Accelerate and free their memory."""
    accelerator.free_memory()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_config(*overrides: str) -> DictConfig:
    """The config of ``python -m peftrec.fastpaths <overrides>``, composed without a run."""
    from peftrec.__main__ import register_recipes

    register_recipes()
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra.compose("fastpaths", overrides=list(overrides))


class Bench:
    """One fast-paths run: the composed config, the split and the task, built once for every variant."""

    @classmethod
    def from_overrides(cls, *overrides: str) -> Bench:
        """The bench of ``python -m peftrec.fastpaths <overrides>``, composed without a run folder (for the
        measuring scripts in ``benchmarks/scripts``, which reuse its model, rows and task)."""
        return cls(bench_config(*overrides))

    def __init__(self, cfg: DictConfig):

        self.cfg = cfg
        self.fp = cfg.fastpaths
        state = PartialState(cpu=use_cpu())
        self.device = state.device
        self.precision = resolve_precision(cfg.trainer.precision, self.device)
        self.accelerator = Accelerator(
            cpu=use_cpu(),
            mixed_precision=_mixed(self.precision),
            # Pinned batches copied without waiting, as the runner does.
            dataloader_config=DataLoaderConfiguration(non_blocking=True),
        )
        self.pin_memory = self.device.type == "cuda"
        self.device_name = device_info(self.device).get("name")
        data = load_data(cfg.data)
        split = build_split(cfg.data, data, task_name=cfg.task.name, seed=cfg.seed)
        examples = evaluation_frames(
            split, cfg.trainer.max_eval_examples, cfg.trainer.get("max_test_examples")
        )
        examples["train"] = split.train
        self.examples = with_ranking_inputs(examples, cfg.task, data, seed=cfg.seed, folder=None)
        self.model_path = resolve_model(cfg.model.name)
        self.tokenizer = load_tokenizer(self.model_path, max_length=cfg.task.max_length)
        self.task = build_task(
            cfg.task,
            self.tokenizer,
            data,
            like_threshold=cfg.data.like_threshold,
            chat_template=cfg.model.chat_template,
        )
        titles = data.item_titles()
        self.train_rows = self.task.dataset(self.examples["train"], titles, train=True)
        self.test_rows = self.task.dataset(self.examples["test"], titles)
        self.full_lm_rows: datasets.Dataset | None = None
        self.split_fingerprint = split.fingerprint

    # --- training ---------------------------------------------------------------------------------

    def model(self, variant: Variant) -> torch.nn.Module:
        """A fresh base model with the recipe's head, seeded alike for every variant."""
        set_seed(self.cfg.seed)
        model = load_base_model(
            self.model_path,
            precision=self.precision,
            attn_implementation=variant.attention,
            gradient_checkpointing=variant.gradient_checkpointing,
            gradient_checkpointing_every=variant.gradient_checkpointing_every,
            quantization=self.cfg.model.get("quantization"),
            device=self.device,
        )
        values = runtime_head_values(
            OmegaConf.to_container(self.cfg.peft, resolve=True), model_path=self.model_path
        )
        model = apply_head(model, build_head_config(self.cfg.peft, **values))
        if self.task.scores_by_search:
            # Before the timed steps: the beam-search evaluation would otherwise fail only after them.
            check_multi_step_generation(model)
        return model

    def rows(self, variant: Variant) -> datasets.Dataset:
        """The training rows the variant's loss reads: whole sequences for the full-LM loss (built once)."""
        if variant.loss != "full_lm":
            return self.train_rows
        if self.full_lm_rows is None:
            self.full_lm_rows = full_lm_dataset(self.task, self.train_rows)
        return self.full_lm_rows

    def loader(self, variant: Variant, batch_size: int) -> DataLoader:
        """The variant's training batches: its rows, padded its way, shuffled with the run's seed."""
        return variant_loader(
            self.rows(variant),
            self.tokenizer,
            variant,
            batch_size=batch_size,
            seed=self.cfg.seed,
            pin_memory=self.pin_memory,
        )

    def first_batch(self, variant: Variant, batch_size: int) -> dict[str, Any]:
        """The variant's first training batch, on the bench's device (for the measuring scripts)."""
        return send_to_device(next(iter(self.loader(variant, batch_size))), self.device)

    def train_variant(self, variant: Variant) -> tuple[dict[str, Any], torch.nn.Module]:
        """Train one variant for warmup + timed steps; measure it; test the head it trained."""
        tcfg, fp = self.cfg.trainer, self.fp
        batch_size = variant.batch_size or fp.batch_size
        steps_total = fp.warmup_steps + fp.train_steps
        full_lm = variant.loss == "full_lm"
        loader = self.loader(variant, batch_size)
        model = self.model(variant)
        if variant.compile_mode:
            # Dynamo caches compiled code per function for the whole process: without a reset, this
            # variant's layers would recompile against the last variant's entries until they hit
            # the recompile limit and fall back to eager.
            torch._dynamo.reset()
            model = compile_model(model, mode=variant.compile_mode, backend=self.fp.compile_backend)
        optimizer = instantiate(tcfg.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
        scheduler = get_scheduler(
            tcfg.scheduler,
            optimizer=optimizer,
            num_warmup_steps=math.ceil(tcfg.warmup_ratio * steps_total),
            num_training_steps=steps_total,
        )
        model, optimizer, loader = self.accelerator.prepare(model, optimizer, loader)
        steps = StepLog.empty()
        graphs_before = traced_graphs()
        waits = HostWaits(self.device)

        def step_ended(step: int) -> None:
            nonlocal graphs_before
            if step == steps_total:
                waits.stop()
            if step in (fp.warmup_steps, steps_total):
                # The timed window's edges: it then holds all of its steps' device work. Inside it the host
                # waits only where the training loop itself does (counted by HostWaits on a GPU).
                synchronize(self.device)
            steps.ends.append(time.perf_counter())
            graphs = traced_graphs()
            steps.new_graphs.append(graphs - graphs_before)
            graphs_before = graphs
            if step == fp.warmup_steps:
                waits.start()

        monitor = MemoryMonitor(self.device)
        shape = model_shape(self.accelerator.unwrap_model(model, keep_torch_compile=False))
        log.info(
            "Training %s: %d + %d steps of %d rows", variant.name, fp.warmup_steps, fp.train_steps, batch_size
        )
        with waits.recording():
            train(
                model,
                loss_fn=logged(hf_lm_loss if full_lm else self.task.loss, steps, full_lm),
                train_loader=loader,
                validate=None,  # nothing to choose: the last step is tested
                optimizer=optimizer,
                scheduler=scheduler,
                accelerator=self.accelerator,
                settings=TrainSettings(
                    max_steps=steps_total,
                    eval_every=steps_total,
                    log_every=tcfg.log_every,  # the product loop's readings
                    max_grad_norm=tcfg.max_grad_norm,
                    select_metric="none",
                    higher_is_better=True,
                ),
                after_optimizer_step=step_ended,
                memory=monitor,
            )
        memory = monitor.summary()
        steps.settle()
        timed = steps.timed(fp.warmup_steps)
        result = {
            "switches": asdict(variant) | {"batch_size": batch_size},
            "fixed_length": fixed_length(self.rows(variant)) if variant.padding == "fixed" else None,
            "checkpointed_layers": len(checkpointed_layers(self.accelerator.unwrap_model(model))),
            "timed_steps": len(steps.timed_steps(fp.warmup_steps)),
            **timed.as_dict("train"),
            **(steps.compiling(fp.warmup_steps) if variant.compile_mode else {}),
            "host_waits": waits.summary(fp.train_steps),
            "computed_tokens_per_sample": round(sum(steps.padded_tokens) / max(sum(steps.rows), 1), 1),
            "real_tokens_per_sample": round(sum(steps.tokens) / max(sum(steps.rows), 1), 1),
            "train_mfu": _round(
                throughput_mfu(
                    timed, shape, training=True, device_name=self.device_name, precision=self.precision
                )
            ),
            "memory": memory,
            "test": self.test_metrics(model),
        }
        return result, model

    def test_metrics(self, model: torch.nn.Module) -> dict[str, Any]:
        """The test metrics (and a 95% interval by user) of a trained head, by the product's scorer.

        The evaluation speed of a compiled model includes compiling its inference graphs
        (``eval_graphs_compiled`` says how many)."""
        before = traced_graphs()
        outputs, speed = self.score(model, self.cfg.trainer.eval_batch_size)
        return (
            self.metrics(outputs) | speed.as_dict("eval") | {"eval_graphs_compiled": traced_graphs() - before}
        )

    def score(
        self, model: torch.nn.Module, batch_size: int, rows: datasets.Dataset | None = None
    ) -> tuple[np.ndarray, Throughput]:
        """Score the test rows with the task's own scorer (one forward pass, or batched beam search)."""
        rows = self.test_rows if rows is None else rows
        loader = self.accelerator.prepare(
            make_loader(rows, self.tokenizer, batch_size=batch_size, train=False, pin_memory=self.pin_memory)
        )
        test = self.examples["test"].iloc[: len(rows)]
        return predict(model, loader, self.task.scorer(test), self.accelerator, desc="Scoring test")

    def metrics(self, outputs: np.ndarray) -> dict[str, Any]:
        """The task's test metrics of these outputs, a 95% interval by user, and how many rows and users."""
        test = self.examples["test"].iloc[: len(outputs)]
        names = list(self.cfg.task.metrics)
        inputs = self.task.metric_inputs(test, outputs)
        return {
            "metrics": metric_lib.compute(names, **inputs),
            **test_breakdown(names, test, inputs, seed=self.cfg.seed),
            "examples": len(test),
            "users": int(test["user_id"].nunique()),
        }

    # --- evaluation paths ---------------------------------------------------------------------------

    def label_evaluation(self, model: torch.nn.Module, *, warm: bool = False) -> dict[str, Any]:
        """One forward pass vs generation (TALLRec's evaluation, on the eager model) on the whole test
        split. ``warm``: score once untimed first, so a compiled model's timing excludes its compiles."""
        batch_size = self.cfg.trainer.eval_batch_size
        if warm:
            self.score(model, batch_size)
        single, single_speed = self.score(model, batch_size)
        generated, generated_speed = generation_scores(
            self.accelerator.unwrap_model(model, keep_torch_compile=False),
            self.task,
            self.test_rows,
            batch_size=batch_size,
            max_new_tokens=self.fp.generation_max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            device=self.device,
        )
        single_rate = single_speed.as_dict("eval")["eval_samples_per_s"]
        generated_rate = generated_speed.as_dict("eval")["eval_samples_per_s"]
        return {
            "single_forward": {**self.metrics(single)["metrics"], **single_speed.as_dict("eval")},
            "generation": {
                **self.metrics(generated)["metrics"],
                **generated_speed.as_dict("eval"),
                "max_new_tokens": self.fp.generation_max_new_tokens,
                "fixed_length": fixed_length(self.test_rows),
            },
            "max_abs_score_difference": float(np.max(np.abs(single - generated))),
            "speedup": round(single_rate / generated_rate, 2),
        }

    def beam_search_evaluation(self, model: torch.nn.Module) -> dict[str, Any]:
        """Batched trie-constrained beam search vs one user at a time, on the first ``users`` test rows."""
        users = min(self.fp.beam_search_users, len(self.test_rows))
        rows = self.test_rows.select(range(users))
        batched, batched_speed = self.score(model, self.cfg.trainer.eval_batch_size, rows)
        one_by_one, single_speed = self.score(model, 1, rows)
        # One batch: counting runs every op through Python, and beam search is thousands of small ops
        # (on the H100, counting two batches outlasted the call that timed them).
        counted = rows.select(range(min(self.cfg.trainer.eval_batch_size, users)))
        flops_per_user = counted_flops(
            lambda: self.score(model, self.cfg.trainer.eval_batch_size, counted)
        ) / len(counted)
        rate = batched_speed.as_dict("eval")["eval_samples_per_s"]
        achieved = mfu(flops_per_user * rate, self.device_name, self.precision)
        return {
            "users": users,
            "num_beams": self.cfg.task.get("num_beams"),
            "top_k": self.cfg.task.get("top_k"),
            "batched": {**self.metrics(batched)["metrics"], **batched_speed.as_dict("eval")},
            "one_by_one": {**self.metrics(one_by_one)["metrics"], **single_speed.as_dict("eval")},
            "same_lists": float(np.mean(np.all(batched == one_by_one, axis=1))),
            "speedup": round(rate / single_speed.as_dict("eval")["eval_samples_per_s"], 2),
            # FLOPs counted by torch.utils.flop_counter over the first batch (padding included).
            "flops_per_user": flops_per_user,
            "mfu": _round(achieved),
        }


def generation_scores(
    model: torch.nn.Module,
    task: Any,
    rows: datasets.Dataset,
    *,
    batch_size: int,
    max_new_tokens: int,
    pad_token_id: int,
    device: torch.device,
) -> tuple[np.ndarray, Throughput]:
    """TALLRec's evaluation: greedy ``generate`` on left-padded batches of one fixed length, the task's
    prediction read from the label words' logits at the first generated token."""
    length = fixed_length(rows)
    outputs = []
    throughput = Throughput()
    synchronize(device)
    start = time.perf_counter()
    model.eval()
    for first in range(0, len(rows), batch_size):
        batch = rows[first : first + batch_size]["input_ids"]
        ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(batch):
            ids[r, length - len(row) :] = torch.tensor(row)
            mask[r, length - len(row) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=pad_token_id,
            )
        first_logits = out.logits[0].float()[:, task.label_ids]
        outputs.append(task.from_label_logits(first_logits).cpu())
        throughput.add({"input_ids": ids, "attention_mask": mask})
    synchronize(device)
    throughput.seconds = time.perf_counter() - start
    return torch.cat(outputs).double().numpy(), throughput


def counted_flops(work: Callable[[], Any]) -> float:
    """FLOPs that ``work`` runs, counted by ``torch.utils.flop_counter`` (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        work()
    return float(counter.get_total_flops())


def ratios(train: Mapping[str, dict[str, Any]], primary: str) -> dict[str, Any]:
    """Each variant against the baseline: samples/s, peak memory and the test metric."""
    base = train.get("baseline")
    if base is None:
        return {}
    out = {}
    for name, result in train.items():
        if name == "baseline" or "error" in result:
            continue
        out[name] = {
            "samples_per_s_x": _ratio(result["train_samples_per_s"], base["train_samples_per_s"]),
            "peak_memory_x": _ratio(result["memory"]["gib"], base["memory"]["gib"]),
            f"test_{primary}_minus_baseline": _round(
                result["test"]["metrics"][primary] - base["test"]["metrics"][primary]
            ),
        }
    return out


def selected_variants(fp: DictConfig) -> list[Variant]:
    """The variants ``fastpaths.variants`` names, then those of ``fastpaths.large_batch_variants`` again
    at ``fastpaths.large_batch_size`` (named ``<variant>_large_batch``) when that is set."""
    names = list(fp.variants) + list(fp.get("large_batch_variants") or [])
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise PeftrecError(
            f"unknown fast-paths variant(s) {', '.join(unknown)}: fastpaths.variants and "
            f"fastpaths.large_batch_variants take {', '.join(VARIANTS)}"
        )
    variants = [VARIANTS[name] for name in fp.variants]
    if fp.get("large_batch_size"):
        variants += [
            replace(VARIANTS[name], name=f"{name}_large_batch", batch_size=fp.large_batch_size)
            for name in fp.get("large_batch_variants") or []
        ]
    return variants


def evaluation_preference(fp: DictConfig, variants: list[Variant]) -> list[str]:
    """``fastpaths.evaluation_variant`` as a list of variant names, most preferred first.

    Raises:
        PeftrecError: a name that is no variant (``fast_large_batch`` counts where it is trained)."""
    chosen = fp.get("evaluation_variant", "fast")
    preference = [chosen] if isinstance(chosen, str) else list(chosen)
    trained = [variant.name for variant in variants]
    unknown = [name for name in preference if name not in VARIANTS and name not in trained]
    if unknown:
        raise PeftrecError(
            f"unknown fast-paths variant(s) {', '.join(unknown)} in fastpaths.evaluation_variant: "
            f"it takes one of {', '.join(trained)}, or a list of them in order of preference"
        )
    if not set(preference) & set(trained):
        log.warning(
            "fastpaths.evaluation_variant (%s) names no variant this run trains (%s): "
            "the evaluation paths are not measured",
            ", ".join(preference),
            ", ".join(trained),
        )
    return preference


def evaluates(name: str, preference: list[str], evaluated: str | None) -> bool:
    """Whether a variant that just trained gets the evaluation paths: it is on the preference list and no
    variant preferred to it has been evaluated yet (a later, more preferred one replaces the evaluation, so
    a failed first choice falls back to the next one that trains)."""
    if name not in preference:
        return False
    return evaluated is None or preference.index(name) < preference.index(evaluated)


def run_fastpaths(cfg: DictConfig) -> dict[str, Any]:
    """Measure every variant in ``fastpaths.variants`` and the evaluation paths; write the record.

    The record is written (atomically) after every variant, with ``complete: false`` and the variants still
    ``pending``, so a run stopped by a time limit keeps every variant it finished."""
    started = time.perf_counter()
    source = git_commit()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    bench = Bench(cfg)
    primary = cfg.task.select_metric
    variants = selected_variants(cfg.fastpaths)
    preference = evaluation_preference(cfg.fastpaths, variants)
    train_results: dict[str, dict[str, Any]] = {}
    evaluation: dict[str, Any] = {}

    def save(pending: list[Variant]) -> dict[str, Any]:
        record = {
            "kind": "fastpaths",
            "recipe": HydraConfig.get().runtime.choices.get("recipe"),
            "task": cfg.task.name,
            "model": cfg.model.name,
            "method": HydraConfig.get().runtime.choices.get("peft"),
            "primary_metric": primary,
            "complete": not pending,
            "pending": [variant.name for variant in pending],
            "split": {"fingerprint": bench.split_fingerprint},
            "train_examples": len(bench.train_rows),
            "train": train_results,
            "vs_baseline": ratios(train_results, primary),
            "evaluation": evaluation,
            "precision": bench.precision,
            "device": device_info(bench.device),
            "versions": package_versions(),
            "git": source,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        write_json_atomic(run_dir / "fastpaths.json", record)
        return record

    for position, variant in enumerate(variants):
        try:
            result, model = bench.train_variant(variant)
        except (RuntimeError, torch.OutOfMemoryError, PeftrecError) as err:  # e.g. compile unsupported here
            log.warning("variant %s failed: %s", variant.name, err)
            train_results[variant.name] = {
                "switches": asdict(variant),
                "error": f"{type(err).__name__}: {err}"[:500],
            }
            release(bench.accelerator, bench.device)
            save(pending=variants[position + 1 :])
            continue
        train_results[variant.name] = result
        log.info("%s: %s", variant.name, _summary(result, primary))
        if evaluates(variant.name, preference, evaluation.get("variant")):
            evaluation = (
                bench.beam_search_evaluation(model)
                if bench.task.scores_by_search
                else bench.label_evaluation(model, warm=variant.compile_mode is not None)
            ) | {"variant": variant.name}
        del model
        release(bench.accelerator, bench.device)
        save(pending=variants[position + 1 :])
    record = save(pending=[])
    print(markdown(record))
    print(f"\nRecord: {run_dir / 'fastpaths.json'}")
    return record


def markdown(record: Mapping[str, Any]) -> str:
    """A table of the variants (with their ratios to the baseline) and the evaluation paths."""
    primary = record["primary_metric"]
    lines = [
        f"Fast paths: {record['recipe']} on {record['model']}, {record['device'].get('name')}, {record['precision']}",
        "",
        f"| variant | batch | train samples/s | x baseline | tokens computed/real per sample | peak memory GiB | x baseline | MFU | test {primary} [95% CI by user] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    vs = record.get("vs_baseline", {})
    for name, result in record["train"].items():
        if "error" in result:
            lines.append(f"| {name} | - | failed: {result['error'][:120]} | | | | | | |")
            continue
        test = result["test"]
        ci = test.get("test_ci95_by_user", {}).get(primary)
        ratio = vs.get(name, {})
        lines.append(
            f"| {name} | {result['switches']['batch_size']} | {result['train_samples_per_s']:.1f} | "
            f"{_x(ratio.get('samples_per_s_x'))} | {result['computed_tokens_per_sample']:.0f}/{result['real_tokens_per_sample']:.0f} | "
            f"{result['memory']['gib']:.2f} | {_x(ratio.get('peak_memory_x'))} | {_pct(result.get('train_mfu'))} | "
            f"{test['metrics'][primary]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + " |"
        )
    for name, result in record["train"].items():
        if "graphs_compiled" in result:
            lines.append(
                f"\n{name}: {result['graphs_compiled']} graphs compiled in {result['steps_compiling']} steps, "
                f"{result['compiling_steps_not_timed']} of them left out of the timing."
            )
        if result.get("host_waits"):
            waits = result["host_waits"]
            sites = ", ".join(f"{site} ({n})" for site, n in waits["sites"].items()) or "none"
            lines.append(
                f"\n{name}: the host waited for the GPU {waits['per_step']} times a timed step: {sites}."
            )
    if record.get("pending"):
        lines.append(f"\nIncomplete: the run stopped before {', '.join(record['pending'])}.")
    evaluation = record.get("evaluation") or {}
    if "generation" in evaluation:
        one, gen = evaluation["single_forward"], evaluation["generation"]
        lines += [
            "",
            f"| evaluation (test, {gen['eval_samples']} rows) | samples/s | test {primary} |",
            "|---|---|---|",
            f"| one forward pass ({evaluation.get('variant', 'fast')}) | {one['eval_samples_per_s']:.1f} | {one[primary]:.4f} |",
            f"| generation ({gen['max_new_tokens']} new tokens, fixed length {gen['fixed_length']}) | "
            f"{gen['eval_samples_per_s']:.1f} | {gen[primary]:.4f} |",
            f"\nOne forward pass is {evaluation['speedup']}x faster; the largest score difference is "
            f"{evaluation['max_abs_score_difference']:.2e}.",
        ]
    if "batched" in evaluation:
        lines += [
            "",
            f"| next-item evaluation ({evaluation['users']} users, {evaluation['num_beams']} beams) | users/s | test {primary} |",
            "|---|---|---|",
            f"| batched constrained beam search | {evaluation['batched']['eval_samples_per_s']:.2f} | {evaluation['batched'][primary]:.4f} |",
            f"| one user at a time | {evaluation['one_by_one']['eval_samples_per_s']:.2f} | {evaluation['one_by_one'][primary]:.4f} |",
            f"\nBatched is {evaluation['speedup']}x faster; {evaluation['same_lists']:.0%} of the lists are identical; "
            f"MFU {_pct(evaluation.get('mfu'))}.",
        ]
    return "\n".join(lines)


def _mixed(precision: str) -> str:
    return precision if precision in ("bf16", "fp16") else "no"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 2) if base else None


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _summary(result: Mapping[str, Any], primary: str) -> str:
    return (
        f"{result['train_samples_per_s']:.1f} samples/s, peak {result['memory']['gib']:.2f} GiB, "
        f"test {primary} {result['test']['metrics'][primary]:.4f}"
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="fastpaths")
def _hydra_main(cfg: DictConfig) -> None:
    from peftrec.__main__ import run_or_exit

    run_or_exit(cfg, run_fastpaths)


def main() -> None:
    """Console entry: ``python -m peftrec.fastpaths recipe=lora_click [overrides ...]``."""
    from peftrec.__main__ import register_recipes

    register_recipes()
    _hydra_main()


if __name__ == "__main__":
    main()
