"""The recipe runner, top to bottom: data -> model -> task -> head -> train -> test -> record.

Only this module reads the Hydra config and calls ``hydra.utils.instantiate``; everything it calls
takes plain, typed arguments.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, parse_flag_from_env, set_seed
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase, get_scheduler

from peftrec import metrics as metric_lib
from peftrec.assets import resolve_dataset, resolve_model
from peftrec.batching import make_loader
from peftrec.checkpoint import (
    CHECKPOINTS,
    find_checkpoint,
    list_checkpoints,
    register_head_only_weights,
    save_checkpoint,
)
from peftrec.comparisons import baseline_inputs
from peftrec.compiling import compile_plugin
from peftrec.config_fingerprint import config_fingerprint
from peftrec.data import (
    COLD_COLUMN,
    ExampleSplit,
    RecData,
    example_split,
    items_before,
    load_recdata,
    load_tabular,
)
from peftrec.data.candidates import candidates_fingerprint, draw_candidates, save_candidates
from peftrec.errors import PeftrecError
from peftrec.flops import model_shape, throughput_mfu
from peftrec.methods import (
    TrainingHooks,
    apply_head,
    load_head,
    runtime_head_values,
    save_head,
    saved_head_summary,
    training_hooks,
)
from peftrec.methods.generation_compat import check_multi_step_generation
from peftrec.models import count_parameters, load_base_model, load_tokenizer, resolve_precision
from peftrec.record import (
    MemoryMonitor,
    device_info,
    git_commit,
    package_versions,
    write_json_atomic,
)
from peftrec.tasks.click import ClickTask
from peftrec.tasks.generative import NextItemTask
from peftrec.tasks.prompts import Prompt
from peftrec.tasks.rating import RatingTask
from peftrec.train import (
    CheckpointPlan,
    Throughput,
    TrainSettings,
    load_trainable_state,
    over_all_processes,
    predict,
    train,
)

log = logging.getLogger("peftrec")


def run(cfg: DictConfig) -> float:
    """Run one recipe and write its run folder.

    Args:
        cfg: the composed Hydra config (conf/config.yaml + recipe + overrides).

    Returns:
        The best validation value of ``task.select_metric`` (what sweepers optimise).
    """
    started = time.perf_counter()
    # The code that runs is the code present now: files edited during the run must not change the record.
    source = git_commit()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = HydraConfig.get().runtime.choices
    set_seed(cfg.seed)
    tcfg = cfg.trainer
    training = tcfg.max_steps > 0

    # --- device and precision ---------------------------------------------------------------
    cpu = use_cpu()
    state = PartialState(cpu=cpu)
    device = state.device
    precision = resolve_precision(tcfg.precision, device)
    check_batch_sizes(tcfg, state.num_processes)
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=precision if precision in ("bf16", "fp16") else "no",
        gradient_accumulation_steps=tcfg.grad_accum,
        # trainer.batch_size is the batch of one optimizer micro-step over all processes: each of N
        # processes takes 1/N of it, so N processes train on the same batches as one.
        # non_blocking with pinned batches (below): the copy to the GPU does not make the host wait for
        # the device's queued work, so the next batch is collated while the GPU still computes this one.
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=True),
        log_with="tensorboard",
        project_dir=run_dir,
        dynamo_plugin=compile_plugin(tcfg),
    )
    main = accelerator.is_main_process
    if not main:
        log.setLevel(logging.WARNING)  # one process reports; the others only warn
    accelerator.init_trackers("tensorboard")
    log.info(
        "Run folder: %s (device %s x %d processes, precision %s)",
        run_dir,
        device,
        state.num_processes,
        precision,
    )

    # --- data: raw events -> leakage-free split, the same for every method and baseline ------------
    data = load_data(cfg.data)
    split = build_split(cfg.data, data, task_name=cfg.task.name, seed=cfg.seed)
    if main:
        split.save(run_dir / "split")
    log.info("Split %s: %s", split.fingerprint[:12], split.summary())
    examples = evaluation_frames(split, tcfg.max_eval_examples, tcfg.get("max_test_examples"))
    if training:
        examples["train"] = split.train
    examples = with_ranking_inputs(
        examples, cfg.task, data, seed=cfg.seed, folder=run_dir / "candidates" if main else None
    )
    if not cfg.get("run_model", True):
        return run_baselines_only(cfg, data, split, examples, run_dir, started=started, source=source)

    # --- model and task ----------------------------------------------------------------------
    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, max_length=cfg.task.max_length)
    model = load_base_model(
        model_path,
        precision=precision,
        attn_implementation=cfg.model.attn_implementation,
        gradient_checkpointing=cfg.model.gradient_checkpointing and training,
        gradient_checkpointing_every=cfg.model.get("gradient_checkpointing_every", 1),
        quantization=cfg.model.get("quantization"),
        device=device,
    )
    task = build_task(
        cfg.task,
        tokenizer,
        data,
        like_threshold=cfg.data.like_threshold,
        chat_template=cfg.model.chat_template,
    )
    titles = data.item_titles()
    tokenized = {name: task.dataset(frame, titles, train=name == "train") for name, frame in examples.items()}
    metric_names = list(cfg.task.metrics)
    select = metric_lib.get_metric(cfg.task.select_metric)

    # --- head: config from conf/peft (+ run-time values), attached to the frozen base ------------
    hooks = TrainingHooks()
    saved_head = None
    if cfg.get("adapter"):
        # A saved head (a run's adapter/ folder or a Hub repo id): evaluated as is, or trained further.
        from peftrec.adapters import resolve_adapter

        saved_head = resolve_adapter(cfg.adapter)  # once: a Hub id costs a request
        model = load_head(model, saved_head, is_trainable=training)
        if training:
            hooks = training_hooks(model)
    elif training:
        runtime_values = runtime_head_values(
            OmegaConf.to_container(cfg.peft, resolve=True), model_path=model_path
        )
        head_config = build_head_config(cfg.peft, **runtime_values)
        model = apply_head(model, head_config)
        hooks = training_hooks(model)  # e.g. AdaLoRA's rank allocation after every optimizer step
    if task.scores_by_search:
        # Before training: the catalog search would otherwise fail only at the first validation.
        check_multi_step_generation(model)
    trainable, total = count_parameters(model)
    log.info(
        "Parameters: %s trainable of %s (%.4f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total
    )

    # --- train --------------------------------------------------------------------------------
    pin_memory = device.type == "cuda"
    eval_loader = {
        name: make_loader(
            tokenized[name],
            tokenizer,
            batch_size=tcfg.eval_batch_size,
            train=False,
            pad_to_multiple_of=tcfg.pad_to_multiple_of,
            pin_memory=pin_memory,
        )
        for name in ("validation", "test")
    }
    if training:
        train_loader = make_loader(
            tokenized["train"],
            tokenizer,
            batch_size=tcfg.batch_size,
            train=True,
            seed=cfg.seed,
            num_workers=tcfg.num_workers,
            pad_to_multiple_of=tcfg.pad_to_multiple_of,
            pin_memory=pin_memory,
        )
        optimizer = instantiate(tcfg.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
        scheduler = get_scheduler(
            tcfg.scheduler,
            optimizer=optimizer,
            num_warmup_steps=math.ceil(tcfg.warmup_ratio * tcfg.max_steps),
            num_training_steps=tcfg.max_steps,
        )
        model, optimizer, train_loader, eval_loader["validation"], eval_loader["test"] = accelerator.prepare(
            model, optimizer, train_loader, eval_loader["validation"], eval_loader["test"]
        )
    else:
        # Evaluation only: no DistributedDataParallel wrapper (nothing to synchronise, and DDP refuses a
        # model without trainable parameters); each process scores its shard of the batches.
        model = accelerator.prepare_model(model, evaluation_mode=True)
        eval_loader["validation"], eval_loader["test"] = accelerator.prepare(
            eval_loader["validation"], eval_loader["test"]
        )
    scorers = {name: task.scorer(examples[name]) for name in ("validation", "test")}

    shape = model_shape(accelerator.unwrap_model(model, keep_torch_compile=False))

    def evaluate(
        name: str, memory: MemoryMonitor | None = None
    ) -> tuple[dict[str, float], np.ndarray, dict[str, float]]:
        outputs, speed = predict(
            model, eval_loader[name], scorers[name], accelerator, desc=f"Evaluating {name}", memory=memory
        )
        values = metric_lib.compute(metric_names, **task.metric_inputs(examples[name], outputs))
        # Beam search's steps are not one forward per row, so its MFU would be guessed: left out.
        eval_mfu = None if task.scores_by_search else mfu_of(speed)
        return values, outputs, {**speed.as_dict("eval"), "eval_mfu": eval_mfu}

    def mfu_of(speed: Throughput, training: bool = False) -> float | None:
        value = throughput_mfu(
            speed, shape, training=training, device_name=device_info(device).get("name"), precision=precision
        )
        # Every process's tokens over one device's peak times the devices: the MFU of each GPU.
        return None if value is None else round(value / accelerator.num_processes, 4)

    train_monitor = MemoryMonitor(device)
    adapter_dir = run_dir / "adapter"
    recipe_yaml = OmegaConf.to_yaml(cfg, resolve=True)

    def save_best(step: int, metrics: dict) -> None:
        if main:
            save_head(
                accelerator.unwrap_model(model, keep_torch_compile=False), adapter_dir, recipe=recipe_yaml
            )

    resume_from = None
    if training:
        fingerprint = config_fingerprint(OmegaConf.to_container(cfg, resolve=True))
        resume_from = find_checkpoint(tcfg.get("resume"), run_dir, fingerprint)
        register_head_only_weights(accelerator)
        checkpoint_plan = CheckpointPlan(
            every=tcfg.get("checkpoint_every", 0) or 0,
            save=lambda step: save_checkpoint(
                accelerator,
                run_dir,
                step,
                keep=tcfg.get("keep_checkpoints", 2),
                info={
                    "fingerprint": fingerprint,
                    "recipe": choices.get("recipe"),
                    "git": source.get("commit"),
                },
            ),
            resume_from=resume_from,
            state_objects=[hooks.state] if hooks.state is not None else [],
        )
        try:
            outcome = train(
                model,
                loss_fn=hooks.wrap_loss(task.loss),
                train_loader=train_loader,
                validate=lambda: evaluate("validation")[0],
                optimizer=optimizer,
                scheduler=scheduler,
                accelerator=accelerator,
                settings=TrainSettings(
                    max_steps=tcfg.max_steps,
                    eval_every=tcfg.eval_every,
                    log_every=tcfg.log_every,
                    max_grad_norm=tcfg.max_grad_norm,
                    select_metric=cfg.task.select_metric,
                    higher_is_better=select.higher_is_better,
                ),
                on_improve=save_best,
                after_optimizer_step=hooks.after_optimizer_step,
                checkpoints=checkpoint_plan,
                memory=train_monitor,
            )
        except PeftrecError as err:
            if main:
                write_failure(run_dir, cfg, choices, err, source=source, checkpoint_dir=run_dir / CHECKPOINTS)
            raise
        if outcome.best_state:  # empty when no validation gave a number
            load_trainable_state(model, outcome.best_state)
            # Saved again from the best state: a resumed run's best step may predate this run folder.
            save_best(outcome.best_step, outcome.best_metrics)
        validation_metrics, best_step = outcome.best_metrics, outcome.best_step
        run_throughput = over_all_processes(outcome.throughput, accelerator)
        train_speed = {
            **run_throughput.as_dict("train"),
            "train_mfu": mfu_of(run_throughput, training=True),
        }
    else:
        validation_metrics, _, _ = evaluate("validation", train_monitor)
        best_step, train_speed, outcome = 0, {}, None
    train_memory = train_monitor.summary()

    # --- test on the best step ----------------------------------------------------------------
    eval_monitor = MemoryMonitor(device)
    test_metrics, test_outputs, eval_speed = evaluate("test", eval_monitor)
    eval_memory = eval_monitor.summary()
    test = examples["test"]
    if main:
        task.prediction_frame(test, test_outputs).to_parquet(
            run_dir / "predictions_test.parquet", index=False
        )
    test_inputs = task.metric_inputs(test, test_outputs)
    metrics = {
        "validation": validation_metrics,
        "test": test_metrics,
        **test_breakdown(metric_names, test, test_inputs, seed=cfg.seed),
    }

    # Baselines on this very split (strong on TALLRec's protocol), so always shown beside the LM.
    baselines = {
        name: metric_lib.compute(baseline_metrics(task.name, metric_names), **inputs)
        for name, inputs in baseline_inputs(
            task.name,
            list(cfg.task.baselines),
            data,
            split,
            test,
            like_threshold=cfg.data.like_threshold,
            top_k=cfg.task.get("top_k"),
            seed=cfg.seed,
        ).items()
    }

    # --- record -------------------------------------------------------------------------------
    result = {
        "status": "completed",
        "recipe": choices.get("recipe"),
        "task": task.name,
        "method": method_name(choices, training, saved_head),
        "adapter_source": cfg.get("adapter"),
        "model": cfg.model.name,
        "data": cfg.data.source or "custom",
        "seed": cfg.seed,
        "metrics": metrics,
        "baselines_test": baselines,
        "users": {name: int(examples[name]["user_id"].nunique()) for name in ("validation", "test")},
        "select_metric": cfg.task.select_metric,
        "best_step": best_step,
        "steps": tcfg.max_steps,
        "validations": outcome.validations if outcome else [],
        # A resumed run's throughput and validations cover every step, from the checkpoint's record on.
        "resumed_from": str(resume_from) if resume_from else None,
        "last_checkpoint": outcome.last_checkpoint if outcome else None,
        "processes": accelerator.num_processes,
        "examples": {
            "train": len(split.train),
            **{name: len(examples[name]) for name in ("validation", "test")},
        },
        "split": {"fingerprint": split.fingerprint, **split.summary()},
        "candidates": candidates_record(examples),
        "params": {"trainable": trainable, "total": total, "trainable_share": trainable / total},
        "memory": {"train": train_memory, "eval": eval_memory},
        "speed": {**train_speed, **eval_speed},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "adapter": _folder_info(adapter_dir),
        # The saved (best-step) head's type and what it learned about itself (AdaLoRA: its rank per module).
        "head": saved_head_summary(adapter_dir),
        "precision": precision,
        "device": device_info(device),
        "versions": package_versions(),
        "git": source,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        write_json_atomic(run_dir / "result.json", result)
        print(_summary_table(result, run_dir))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return float(validation_metrics.get(cfg.task.select_metric, float("nan")))


def run_baselines_only(
    cfg: DictConfig,
    data: RecData,
    split: ExampleSplit,
    examples: dict[str, pd.DataFrame],
    run_dir: Path,
    *,
    started: float,
    source: dict,
) -> float:
    """``recipe=baselines_<task>``: every classical baseline of ``task.baselines`` on the split's
    validation and test rows (the same rows an LM run is tested on), in the LM runs' record format."""
    names = baseline_metrics(cfg.task.name, list(cfg.task.metrics))
    # One call over validation and test rows together: learned baselines (SASRec) train once.
    both = pd.concat([examples["validation"], examples["test"]], ignore_index=True)
    cut = len(examples["validation"])
    joint = baseline_inputs(
        cfg.task.name,
        list(cfg.task.baselines),
        data,
        split,
        both,
        like_threshold=cfg.data.like_threshold,
        top_k=cfg.task.get("top_k"),
        seed=cfg.seed,
    )
    by_split = {
        "validation": {name: {k: v[:cut] for k, v in inputs.items()} for name, inputs in joint.items()},
        "test": {name: {k: v[cut:] for k, v in inputs.items()} for name, inputs in joint.items()},
    }
    baselines = {
        name: {
            "validation": metric_lib.compute(names, **by_split["validation"][name]),
            "test": metric_lib.compute(names, **inputs),
            **test_breakdown(names, examples["test"], inputs, seed=cfg.seed),
        }
        for name, inputs in by_split["test"].items()
    }
    result = {
        "status": "completed",
        "recipe": HydraConfig.get().runtime.choices.get("recipe"),
        "task": cfg.task.name,
        "method": "baselines",
        "data": cfg.data.source or "custom",
        "seed": cfg.seed,
        "baselines": baselines,
        "baselines_test": {name: values["test"] for name, values in baselines.items()},
        "users": {name: int(examples[name]["user_id"].nunique()) for name in ("validation", "test")},
        "examples": {
            "train": len(split.train),
            **{name: len(examples[name]) for name in ("validation", "test")},
        },
        "split": {"fingerprint": split.fingerprint, **split.summary()},
        "candidates": candidates_record(examples),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "versions": package_versions(),
        "git": source,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if not PartialState().is_main_process:
        return float("nan")
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    write_json_atomic(run_dir / "result.json", result)
    rows = [f"| baseline | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for name, values in baselines.items():
        rows.append(f"| {name} | " + " | ".join(f"{values['test'][n]:.4f}" for n in names) + " |")
    print(
        "\n".join(
            ["", f"baselines, {cfg.task.name} task, {result['data']} (test)", *rows, f"Run folder: {run_dir}"]
        )
    )
    select = cfg.task.select_metric
    values = [v["validation"].get(select, float("nan")) for v in baselines.values()]
    best = max if metric_lib.get_metric(select).higher_is_better else min
    return float(best(values)) if values else float("nan")


# A saved head's peft_type -> the conf/peft option that builds it (QLoRA saves a LoRA head).
_PEFT_TYPE_OPTIONS = {
    "LORA": "lora",
    "ADALORA": "adalora",
    "PREFIX_TUNING": "prefix",
    "PROMPT_TUNING": "prompt_tuning",
    "IA3": "ia3",
    "BOTTLENECK": "adapter",
}


def method_name(choices: dict, training: bool, saved_head: Path | None) -> str:
    """The head named in the record: the loaded adapter's head type (``saved_head``: its folder), else
    the conf/peft choice when training, else ``zero-shot``."""
    if saved_head is not None:
        summary = saved_head_summary(saved_head) or {}
        peft_type = str(summary.get("peft_type"))
        return _PEFT_TYPE_OPTIONS.get(peft_type, peft_type.lower())
    return choices.get("peft") if training else "zero-shot"


def use_cpu() -> bool:
    """Run on CPU when asked (``ACCELERATE_USE_CPU=1``) or when there is no GPU; several CPU processes
    (``torchrun --nproc_per_node N``) then train data-parallel over gloo."""
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def check_batch_sizes(trainer_cfg: DictConfig, processes: int) -> None:
    """Each of N processes takes 1/N of every batch, so batch sizes must divide evenly."""
    for key in ("batch_size", "eval_batch_size"):
        value = trainer_cfg[key]
        if value % processes:
            raise PeftrecError(
                f"trainer.{key}={value} does not split evenly over {processes} processes (each takes 1/{processes} "
                f"of every batch): set trainer.{key} to a multiple of {processes}"
            )


def write_failure(
    run_dir: Path, cfg: DictConfig, choices: dict, error: Exception, *, source: dict, checkpoint_dir: Path
) -> None:
    """A ``result.json`` with ``status: failed`` and the reason, so reports list the run instead of
    silently missing it; the checkpoints written so far stay for ``trainer.resume``."""
    write_json_atomic(
        run_dir / "result.json",
        {
            "status": "failed",
            "error": str(error),
            "recipe": choices.get("recipe"),
            "task": cfg.task.name,
            "method": choices.get("peft"),
            "model": cfg.model.name,
            "data": cfg.data.source or "custom",
            "seed": cfg.seed,
            "checkpoints": [p.name for p in list_checkpoints(checkpoint_dir)],
            "versions": package_versions(),
            "git": source,
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )


def build_split(data_cfg: DictConfig, data: RecData, *, task_name: str, seed: int) -> ExampleSplit:
    """The split of ``conf/data`` for this task (click needs both labels in validation and test)."""
    return example_split(
        data,
        protocol=data_cfg.protocol,
        history_len=data_cfg.history_len,
        like_threshold=data_cfg.like_threshold,
        last_n=data_cfg.last_n,
        fractions=tuple(data_cfg.fractions),
        holdout=data_cfg.get("holdout", 1),
        train_shots=data_cfg.train_shots,
        cold_start=data_cfg.get("cold_start"),
        cold_fraction=data_cfg.get("cold_fraction", 0.2),
        require_both_labels=task_name == "click",
        seed=seed,
    )


def evaluation_frames(
    split: ExampleSplit, max_validation: int | None, max_test: int | None
) -> dict[str, pd.DataFrame]:
    """Validation and test examples, each capped to a fixed draw when asked (CPU budgets).

    The draw uses a fixed seed (not ``cfg.seed``) so that every method and seed meets the same rows.
    """
    frames = {}
    for name, frame, cap in (
        ("validation", split.validation, max_validation),
        ("test", split.test, max_test),
    ):
        if cap and len(frame) > cap:
            frame = frame.sample(n=cap, random_state=0).sort_index().reset_index(drop=True)
        frames[name] = frame
    return frames


def with_ranking_inputs(
    frames: dict[str, pd.DataFrame], task_cfg: DictConfig, data: RecData, *, seed: int, folder: Path | None
) -> dict[str, pd.DataFrame]:
    """Add what next-item ranking needs: each user's earlier items (excluded from the ranked list) and,
    for candidate ranking, the fixed candidate lists (drawn once per seed, saved with the run)."""
    if task_cfg.name != "generative":
        return frames
    item_ids = data.items["item_id"].astype(str).tolist()
    ranked = [name for name in frames if name != "train"]  # only ranked lists exclude seen items
    seen: dict[str, list] = {}
    if task_cfg.get("exclude_seen", True):
        # One pass over the events for every ranked split (items_before sorts all of them).
        both = pd.concat([frames[name] for name in ranked], ignore_index=True)
        flat = iter(items_before(data.interactions, both))
        seen = {name: [sorted(next(flat)) for _ in range(len(frames[name]))] for name in ranked}
    out = {}
    for name, frame in frames.items():
        if name in seen:
            frame = frame.assign(seen_item_ids=seen[name])
        if task_cfg.get("ranking") == "candidates":
            drawn = draw_candidates(frame, data.interactions, item_ids, n=task_cfg.num_candidates, seed=seed)
            if folder is not None:  # only the main process writes
                save_candidates(drawn, folder / f"{name}.parquet")
            frame = frame.assign(
                candidate_item_ids=drawn["candidate_item_ids"].to_list(),
                target_position=drawn["target_position"].to_numpy(),
            )
        out[name] = frame
    return out


def candidates_record(frames: dict[str, pd.DataFrame]) -> dict[str, str] | None:
    """Fingerprints of the candidate lists used (equal fingerprints: the same test for every method)."""
    if "candidate_item_ids" not in frames["test"].columns:
        return None
    return {
        name: candidates_fingerprint(frame[["user_id", "item_id", "candidate_item_ids", "target_position"]])
        for name, frame in frames.items()
        if name != "train"
    }


def build_task(
    task_cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase,
    data: RecData,
    *,
    like_threshold: float,
    chat_template: bool,
) -> ClickTask | RatingTask | NextItemTask:
    """The task object of ``conf/task`` (click, rating or generative)."""
    prompt = Prompt(
        template=task_cfg.template,
        like_threshold=like_threshold,
        chat_template=chat_template,
        answer_cue=task_cfg.plain_answer_cue,
    )
    common = {"max_length": task_cfg.max_length}
    if task_cfg.name == "click":
        return ClickTask(
            tokenizer,
            prompt,
            label_words=task_cfg.label_words,
            plain_label_words=task_cfg.plain_label_words,
            **common,
        )
    if task_cfg.name == "rating":
        return RatingTask(
            tokenizer,
            prompt,
            values=list(task_cfg["values"]),
            label_words=task_cfg.label_words,
            plain_label_words=task_cfg.plain_label_words,
            **common,
        )
    if task_cfg.name == "generative":
        return NextItemTask(
            tokenizer,
            prompt,
            data.items,
            ranking=task_cfg.ranking,
            top_k=task_cfg.top_k,
            num_beams=task_cfg.get("num_beams"),
            num_candidates=task_cfg.get("num_candidates", 20),
            **common,
        )
    raise PeftrecError(f"unknown task {task_cfg.name!r}: use task=click, task=rating or task=generative")


def test_breakdown(
    names: list[str], test: pd.DataFrame, inputs: dict[str, np.ndarray], *, seed: int
) -> dict[str, dict]:
    """Per-user bootstrap intervals of the test metrics and, under cold start, warm and cold metrics.

    Few users can make most of a test set (TALLRec's: 34 users, 5 of them 68% of it): the intervals
    resample users, not examples.
    """
    users = test["user_id"].to_numpy()
    out: dict[str, dict] = {
        "test_ci95_by_user": {
            name: metric_lib.bootstrap_interval(name, users, seed=seed, **inputs) for name in names
        }
    }
    if COLD_COLUMN in test.columns:
        cold = test[COLD_COLUMN].to_numpy(dtype=bool)
        for label, mask in (("test_warm", ~cold), ("test_cold", cold)):
            subset = {k: v[mask] for k, v in inputs.items()}
            out[label] = {"examples": int(mask.sum()), "users": int(len(set(users[mask])))}
            if mask.any():
                out[label].update(metric_lib.compute(names, **subset))
    return out


def baseline_metrics(task_name: str, names: list[str]) -> list[str]:
    """The metrics that make sense for a baseline's output (for click: AUC, as its score is not a
    probability; logloss and accuracy are left out)."""
    if task_name == "click":
        return [n for n in names if n not in ("logloss", "accuracy")]
    return [n for n in names if n != "valid_ratio"]


def load_data(data_cfg: DictConfig) -> RecData:
    """Load a registered dataset (``data.source``) or the user's own files (``data.interactions``)."""
    if data_cfg.get("interactions"):
        return load_tabular(
            data_cfg.interactions,
            data_cfg.get("items"),
            columns=dict(data_cfg.get("columns") or {}),
            item_columns=dict(data_cfg.get("item_columns") or {}),
            sep=data_cfg.get("sep"),
        )
    if not data_cfg.get("source"):
        raise PeftrecError(
            "no data given: set data=movielens_100k (or another conf/data option), or data=custom data.interactions=PATH"
        )
    return load_recdata(resolve_dataset(data_cfg.source))


def build_head_config(peft_cfg: DictConfig, **runtime_values: object) -> object:
    """Instantiate ``conf/peft/<head>.yaml`` with run-time values; a value peft refuses becomes a PeftrecError."""
    try:
        return instantiate(peft_cfg, **runtime_values)
    except InstantiationException as err:
        cause = str(err.__cause__ or err).rstrip(".")
        raise PeftrecError(
            f"the head config ({peft_cfg.get('_target_')}) is invalid: {cause}. "
            "Fix the peft.* value it names on the command line or in conf/peft/"
        ) from err


def _folder_info(folder: Path) -> dict[str, object] | None:
    if not folder.is_dir():
        return None
    return {"path": folder.name, "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())}


def _summary_table(result: dict, run_dir: Path) -> str:
    metrics = result["metrics"]
    names = list(metrics["test"])
    rows = [f"| split | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for split_name in ("validation", "test"):
        values = metrics[split_name]
        rows.append(
            f"| {split_name} | " + " | ".join(f"{values.get(n, float('nan')):.4f}" for n in names) + " |"
        )
    for name, values in result.get("baselines_test", {}).items():
        rows.append(
            f"| test, baseline {name} | "
            + " | ".join(f"{values[n]:.4f}" if n in values else "-" for n in names)
            + " |"
        )
    params = result["params"]
    speed = result["speed"]
    lines = [
        "",
        f"{result['recipe']}: {result['method']} on {result['model']}, {result['task']} task, {result['data']}",
        *rows,
        f"trainable parameters: {params['trainable']:,} of {params['total']:,} ({100 * params['trainable_share']:.3f}%)",
        f"train: {speed.get('train_samples_per_s', float('nan')):.2f} samples/s; "
        f"test: {speed.get('eval_samples_per_s', float('nan')):.2f} samples/s; "
        f"peak memory ({result['memory']['train']['kind']}): {result['memory']['train']['gib']:.2f} GiB; "
        f"wall {result['wall_seconds'] / 60:.1f} min",
        f"Run folder: {run_dir}",
    ]
    return "\n".join(lines)
