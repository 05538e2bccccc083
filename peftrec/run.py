"""The recipe runner, top to bottom: data -> model -> task -> head -> train -> test -> record.

Only this module reads the Hydra config and calls ``hydra.utils.instantiate``; everything it calls
takes plain, typed arguments.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pandas as pd
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import get_scheduler

from peftrec import metrics as metric_lib
from peftrec.assets import resolve_dataset, resolve_model
from peftrec.baselines import click_baseline_scores
from peftrec.batching import make_loader
from peftrec.data import RecData, click_split, load_recdata, load_tabular
from peftrec.errors import PeftrecError
from peftrec.methods import (
    TrainingHooks,
    apply_head,
    runtime_head_values,
    save_head,
    saved_head_summary,
    training_hooks,
)
from peftrec.models import count_parameters, load_base_model, load_tokenizer, resolve_precision
from peftrec.record import (
    device_info,
    git_commit,
    package_versions,
    peak_memory,
    reset_peak_memory,
    write_json_atomic,
)
from peftrec.tasks.click import ClickPrompt, ClickTask
from peftrec.train import TrainSettings, load_trainable_state, predict, train

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
    device = PartialState().device
    precision = resolve_precision(tcfg.precision, device)
    accelerator = Accelerator(
        mixed_precision="bf16" if precision == "bf16" else "no",
        gradient_accumulation_steps=tcfg.grad_accum,
        log_with="tensorboard",
        project_dir=run_dir,
    )
    accelerator.init_trackers("tensorboard")
    log.info("Run folder: %s (device %s, precision %s)", run_dir, device, precision)

    # --- data: raw events -> leakage-free time-ordered split -----------------------------------
    data = load_data(cfg.data)
    split = click_split(
        data,
        history_len=cfg.data.history_len,
        like_threshold=cfg.data.like_threshold,
        protocol=cfg.data.protocol,
        last_n=cfg.data.last_n,
        fractions=tuple(cfg.data.fractions),
        train_shots=cfg.data.train_shots,
        seed=cfg.seed,
    )
    split.save(run_dir / "split")
    log.info("Split %s: %s", split.fingerprint[:12], split.summary())

    # --- model and task ----------------------------------------------------------------------
    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, max_length=cfg.task.max_length)
    model = load_base_model(
        model_path,
        precision=precision,
        attn_implementation=cfg.model.attn_implementation,
        gradient_checkpointing=cfg.model.gradient_checkpointing and training,
        quantization=cfg.model.get("quantization"),
        device=device,
    )
    task = ClickTask(
        tokenizer,
        ClickPrompt(
            template=cfg.task.template,
            like_threshold=cfg.data.like_threshold,
            chat_template=cfg.model.chat_template,
            answer_cue=cfg.task.plain_answer_cue,
        ),
        label_words=cfg.task.label_words,
        plain_label_words=cfg.task.plain_label_words,
        max_length=cfg.task.max_length,
    )
    titles = data.item_titles()
    validation_examples = split.validation
    if tcfg.max_eval_examples and len(validation_examples) > tcfg.max_eval_examples:
        # Checkpoint choice only. A fixed draw (not cfg.seed) keeps every method and seed on the same rows.
        validation_examples = validation_examples.sample(n=tcfg.max_eval_examples, random_state=0).sort_index()
    tokenized = {
        "validation": task.dataset(validation_examples, titles),
        "test": task.dataset(split.test, titles),
    }
    if training:  # zero-shot runs never read the train split
        tokenized["train"] = task.dataset(split.train, titles)
    metric_names = list(cfg.task.metrics)
    select = metric_lib.get_metric(cfg.task.select_metric)

    # --- head: config from conf/peft (+ run-time values), attached to the frozen base ------------
    hooks = TrainingHooks()
    if training:
        runtime_values = runtime_head_values(OmegaConf.to_container(cfg.peft, resolve=True), model_path=model_path)
        head_config = build_head_config(cfg.peft, **runtime_values)
        model = apply_head(model, head_config)
        hooks = training_hooks(model)  # e.g. AdaLoRA's rank allocation after every optimizer step
    trainable, total = count_parameters(model)
    log.info("Parameters: %s trainable of %s (%.4f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    # --- train --------------------------------------------------------------------------------
    eval_loader = {
        name: make_loader(tokenized[name], tokenizer, batch_size=tcfg.eval_batch_size, train=False)
        for name in ("validation", "test")
    }
    if training:
        train_loader = make_loader(
            tokenized["train"], tokenizer, batch_size=tcfg.batch_size, train=True, seed=cfg.seed, num_workers=tcfg.num_workers
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
        model, eval_loader["validation"], eval_loader["test"] = accelerator.prepare(
            model, eval_loader["validation"], eval_loader["test"]
        )
    labels = {name: df["label"].to_numpy() for name, df in (("validation", validation_examples), ("test", split.test))}

    def evaluate(name: str) -> tuple[dict[str, float], pd.Series, dict[str, float]]:
        scores, speed = predict(model, eval_loader[name], task.scores, accelerator, desc=f"Evaluating {name}")
        values = metric_lib.compute(metric_names, y_true=labels[name], y_score=scores)
        return values, scores, speed.as_dict("eval")

    reset_peak_memory(device)
    adapter_dir = run_dir / "adapter"
    if training:
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
            on_improve=lambda step, _: save_head(accelerator.unwrap_model(model), adapter_dir),
            after_optimizer_step=hooks.after_optimizer_step,
        )
        load_trainable_state(model, outcome.best_state)
        validation_metrics, best_step = outcome.best_metrics, outcome.best_step
        train_speed = outcome.throughput.as_dict("train")
    else:
        validation_metrics, _, _ = evaluate("validation")
        best_step, train_speed, outcome = 0, {}, None
    train_memory = peak_memory(device)

    # --- test on the best step ----------------------------------------------------------------
    reset_peak_memory(device)
    test_metrics, test_scores, eval_speed = evaluate("test")
    eval_memory = peak_memory(device)
    predictions = split.test[["user_id", "item_id", "timestamp", "label"]].assign(score=test_scores)
    predictions.to_parquet(run_dir / "predictions_test.parquet", index=False)
    # Few users can make most of a test set (TALLRec's: 34 users, 5 of them 68% of it): resample users.
    test_intervals = {
        name: metric_lib.bootstrap_interval(
            name, predictions["user_id"].to_numpy(), y_true=labels["test"], y_score=test_scores, seed=cfg.seed
        )
        for name in metric_names
    }

    # Trivial baselines on this very split: strong on TALLRec's protocol, so always shown beside the LM.
    baselines = {
        name: metric_lib.compute(ranking_metrics(metric_names), y_true=labels["test"], y_score=scores)
        for name, scores in click_baseline_scores(data.interactions, split.test).items()
    }

    # --- record -------------------------------------------------------------------------------
    result = {
        "status": "completed",
        "recipe": choices.get("recipe"),
        "task": task.name,
        "method": choices.get("peft") if training else "zero-shot",
        "model": cfg.model.name,
        "data": cfg.data.source or "custom",
        "seed": cfg.seed,
        "metrics": {"validation": validation_metrics, "test": test_metrics, "test_ci95_by_user": test_intervals},
        "baselines_test": baselines,
        "users": {"validation": int(validation_examples["user_id"].nunique()), "test": int(split.test["user_id"].nunique())},
        "select_metric": cfg.task.select_metric,
        "best_step": best_step,
        "steps": tcfg.max_steps,
        "validations": outcome.validations if outcome else [],
        "examples": {"train": len(split.train), "validation": len(validation_examples), "test": len(split.test)},
        "split": {"fingerprint": split.fingerprint, **split.summary()},
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
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    write_json_atomic(run_dir / "result.json", result)
    accelerator.end_training()
    print(_summary_table(result, run_dir))
    return float(validation_metrics.get(cfg.task.select_metric, float("nan")))


def ranking_metrics(names: list[str]) -> list[str]:
    """The metrics that make sense for a score that is not a probability (AUC yes; logloss, accuracy no)."""
    return [n for n in names if n not in ("logloss", "accuracy")]


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
        raise PeftrecError("no data given: set data=movielens_100k (or another conf/data option), or data=custom data.interactions=PATH")
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
        rows.append(f"| {split_name} | " + " | ".join(f"{values.get(n, float('nan')):.4f}" for n in names) + " |")
    for name, values in result.get("baselines_test", {}).items():
        rows.append(f"| test, baseline {name} | " + " | ".join(f"{values[n]:.4f}" if n in values else "-" for n in names) + " |")
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
