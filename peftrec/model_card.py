"""The model card (``README.md``) of a published head: Hub metadata + what a reader needs to use and trust it.

Built from a run's ``result.json`` alone (it holds the resolved config too), so the card states exactly
what was measured. The metadata follows huggingface_hub's :class:`~huggingface_hub.ModelCardData`
conventions: ``base_model``, ``library_name: peft``, ``tags``, ``datasets``, ``license`` and a
``model-index`` of :class:`~huggingface_hub.EvalResult` (the test metrics, with the split they were
measured on). The body is the Jinja template :data:`TEMPLATE` below; the upload lives in
:mod:`peftrec.publish`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from peftrec.assets import find_model

# Hub license ids of the registered base models' licenses (peftrec.assets names them in words).
_HUB_LICENSES = {"apache-2.0": "apache-2.0", "mit": "mit", "gemma terms of use": "gemma"}
_DATASET_NAMES = {"movielens-100k": "MovieLens-100K", "movielens-1m": "MovieLens-1M"}
# A model folder inside the Hugging Face cache names its repo: .../models--owner--name/snapshots/<sha>.
_HF_CACHE_FOLDER = re.compile(r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)$")
_HUB_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")

PROTOCOLS = {
    "tallrec": "TALLRec's click protocol: the last `last_n` eligible ratings in global time order, cut in time order",
    "full": "every eligible rating in global time order, cut in time order",
    "per_user": "per-user leave-one-out: each user's last rating is test, the one before it validation",
    "random": "a seeded random cut (not a forecast)",
}


def hub_base_model(name: str) -> str | None:
    """The Hub id of the base model a run's ``model.name`` names, when it can be known.

    Args:
        name: ``model.name`` of the run: a peftrec registry key (``smollm2-135m-instruct``), a Hub id, or
            a local folder (a Hugging Face cache snapshot folder names its repo; any other folder does not).

    Returns:
        The Hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``), or None for a folder that names no repo.
    """
    asset = find_model(name)
    if asset is not None:
        return asset.hub_id
    path = Path(name).expanduser()
    if path.exists():
        for part in (path, *path.parents):
            match = _HF_CACHE_FOLDER.search(part.name)
            if match:
                return f"{match['owner']}/{match['name']}"
        return None
    return name if _HUB_ID.fullmatch(name) else None


def base_model_license(hub_id: str | None) -> str | None:
    """The Hub license id of a registered base model (None when peftrec does not know it)."""
    asset = find_model(hub_id) if hub_id else None
    return _HUB_LICENSES.get(asset.license.lower()) if asset else None


def card_data(result: dict[str, Any], *, repo_id: str, base_model: str | None) -> ModelCardData:
    """The card's YAML metadata.

    Args:
        result: a completed run's ``result.json``.
        repo_id: the Hub repo (``owner/name``); its name is the model-index name.
        base_model: the base model's Hub id, or None when unknown (then no ``base_model`` key).

    Returns:
        The metadata: base model, ``library_name: peft``, ``pipeline_tag: text-generation``, tags
        (recommendation, peftrec, the head, the task), datasets, license and a model-index holding
        every finite test metric on the run's split.
    """
    config = result["config"]
    data_key = config["data"].get("source")
    head_type = (result.get("head") or {}).get("peft_type", "").lower()
    tags = ["peftrec", "recommendation", result["method"], result["task"]]
    if head_type == "bottleneck":
        tags.append("bottleneck-adapter")
    elif head_type and head_type not in tags:
        tags.append(head_type)  # e.g. qlora is a LoRA head
    if data_key:
        tags.append(data_key)
    split = result["split"]
    evals = [
        EvalResult(
            task_type="text-generation",
            task_name=task_title(config["task"]),
            dataset_type=data_key or "custom",
            dataset_name=dataset_title(config["data"]),
            dataset_config=config["data"]["protocol"],
            dataset_split="test",
            dataset_revision=split["fingerprint"],
            dataset_args={
                "history_len": config["data"]["history_len"],
                "like_threshold": config["data"]["like_threshold"],
                "test_examples": result["examples"]["test"],
                "test_users": result["users"]["test"],
            },
            metric_type=name,
            metric_name=f"test {name}",
            metric_value=float(value),
        )
        for name, value in result["metrics"]["test"].items()
        if isinstance(value, int | float) and math.isfinite(value)  # the Hub refuses NaN
    ]
    return ModelCardData(
        base_model=base_model,
        library_name="peft",
        pipeline_tag="text-generation",
        tags=tags,
        datasets=[data_key] if data_key else None,
        license=base_model_license(base_model),
        model_name=repo_id.split("/")[-1],
        eval_results=evals or None,
    )


def build_card(
    result: dict[str, Any],
    *,
    repo_id: str,
    base_model: str | None,
    files: list[tuple[str, int]],
    overrides: list[str] | None = None,
) -> ModelCard:
    """The whole model card.

    Args:
        result: a completed run's ``result.json``.
        repo_id: the Hub repo (``owner/name``) the card is for; the usage snippets name it.
        base_model: the base model's Hub id (None: the card says the run used a local model folder).
        files: ``(name, bytes)`` of the other files the repo holds, listed in the card.
        overrides: the command-line overrides of the run (Hydra's ``overrides.yaml``), for the
            command that reproduces it.

    Returns:
        A :class:`~huggingface_hub.ModelCard` (``str(card)`` is the README text).
    """
    config = result["config"]
    task, data = config["task"], config["data"]
    names = list(result["metrics"]["test"])
    is_bottleneck = (result.get("head") or {}).get("peft_type") == "BOTTLENECK"
    context = {
        "card_data": card_data(result, repo_id=repo_id, base_model=base_model).to_yaml(),
        "repo_id": repo_id,
        "title": repo_id.split("/")[-1],
        "result": result,
        "config": config,
        "base_model": base_model,
        "base_link": f"[{base_model}](https://huggingface.co/{base_model})"
        if base_model
        else "a local base model",
        "headline": _headline(result, task["select_metric"]),
        "wall": _duration(result.get("wall_seconds")),
        "answer_cue": (task.get("plain_answer_cue") or "").encode("unicode_escape").decode(),
        "model_name": config["model"]["name"],
        "base_model_given": base_model is not None
        and hub_base_model(str(config["model"]["name"])) != base_model,
        "is_bottleneck": is_bottleneck,
        "task_title": task_title(task),
        "dataset_title": dataset_title(data),
        "label_words": label_words(task),
        "protocol": PROTOCOLS.get(data["protocol"], data["protocol"]),
        "split_rows": _split_rows(result),
        "result_header": _row(["", *names]) + "\n" + _row(["---"] * (len(names) + 1)),
        "result_rows": _result_rows(result, names),
        "head_settings": _head_settings(config.get("peft") or {}),
        "params": result["params"],
        "memory": _memory(result.get("memory") or {}),
        "speed": result.get("speed") or {},
        "versions": result.get("versions") or {},
        "git": result.get("git") or {},
        "command": " ".join(["python -m peftrec", *(overrides or [f"recipe={result.get('recipe')}"])]),
        "files": files,
    }
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    return ModelCard(env.from_string(TEMPLATE).render(**context).rstrip() + "\n")


def task_title(task: dict[str, Any]) -> str:
    """One line naming the task and how it is scored."""
    if task["name"] == "click":
        return "Click prediction: will the user like the item (Yes/No, scored by p(Yes))"
    if task["name"] == "rating":
        return "Rating prediction: the 1-5 score (expected value over the digit label words)"
    if task.get("ranking") == "candidates":
        return f"Next item: rank {task.get('num_candidates', 20)} lettered candidates by their letter's logit"
    return "Next item: the next item's title by trie-constrained beam search over the catalog"


def dataset_title(data: dict[str, Any]) -> str:
    """The data set's display name (the user's own files: ``custom``)."""
    source = data.get("source")
    return _DATASET_NAMES.get(source, source) if source else "custom (the user's own files)"


def label_words(task: dict[str, Any]) -> str:
    """What the model answers, in words for the card."""
    if task["name"] == "generative" and task.get("ranking") != "candidates":
        return "the target item's title, then end of sequence (no label words)"
    if task["name"] == "generative":
        letters = [chr(ord("A") + i) for i in range(task.get("num_candidates", 20))]
        return f"the candidate letters {letters[0]}..{letters[-1]}, one token each"
    words = ", ".join(f"`{w}`" for w in task["label_words"])
    plain = ", ".join(f"`{w}`" for w in task.get("plain_label_words") or [])
    order = " (negative, positive)" if task["name"] == "click" else ""
    return f"{words}{order}; without a chat template: {plain}" if plain else f"{words}{order}"


def _headline(result: dict[str, Any], metric: str) -> str:
    value = result["metrics"]["test"].get(metric)
    text = f"Test {metric}: {_fmt(value)}"
    ci = (result["metrics"].get("test_ci95_by_user") or {}).get(metric)
    if ci:
        text += f" (95% interval over {result['users']['test']} test users: [{_fmt(ci[0])}, {_fmt(ci[1])}])"
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def _result_rows(result: dict[str, Any], names: list[str]) -> list[str]:
    metrics = result["metrics"]
    rows = [
        _row(
            [
                f"validation (best step {result.get('best_step')})",
                *(_fmt(metrics["validation"].get(n)) for n in names),
            ]
        ),
        _row(["**test**", *(f"**{_fmt(metrics['test'].get(n))}**" for n in names)]),
    ]
    ci = metrics.get("test_ci95_by_user") or {}
    if ci:
        rows.append(
            _row(
                [
                    "test, 95% interval over users",
                    *(f"[{_fmt(ci[n][0])}, {_fmt(ci[n][1])}]" if n in ci else "-" for n in names),
                ]
            )
        )
    for label in ("test_warm", "test_cold"):
        if label in metrics:
            part = metrics[label]
            rows.append(
                _row(
                    [
                        f"{label.replace('_', ', ')} ({part['examples']} rows)",
                        *(_fmt(part.get(n)) for n in names),
                    ]
                )
            )
    for name, values in (result.get("baselines_test") or {}).items():
        rows.append(_row([f"baseline: {name}", *(_fmt(values.get(n)) for n in names)]))
    return rows


def _split_rows(result: dict[str, Any]) -> list[str]:
    splits = result["split"].get("splits") or {}
    rows = []
    for name in ("train", "validation", "test"):
        info = splits.get(name) or {}
        evaluated = result["examples"].get(name)
        rows.append(
            _row(
                [
                    name,
                    f"{info.get('examples', '-'):,}" if "examples" in info else "-",
                    f"{evaluated:,}" if evaluated is not None else "-",
                    (result.get("users") or {}).get(name, info.get("users", "-")),
                ]
            )
        )
    return rows


def _head_settings(peft: dict[str, Any]) -> str:
    shown = {k: v for k, v in peft.items() if not k.startswith("_") and v is not None and k != "task_type"}
    return ", ".join(f"`{k}={v}`" for k, v in shown.items())


def _memory(memory: dict[str, Any]) -> str:
    parts = [
        f"{phase} {info['gib']:.2f} GiB ({info['kind']})"
        for phase, info in memory.items()
        if isinstance(info, dict) and "gib" in info
    ]
    return "; ".join(parts) or "-"


TEMPLATE = """\
---
{{ card_data }}
---

# {{ title }}

A **{{ result.method }}** head for {{ base_link }}, fine-tuned with peftrec as a recommender.
Task: {{ task_title }}. Data: {{ dataset_title }}, `{{ config.data.protocol }}` split.

**{{ headline }}.** Read it beside the classical baselines on the same test rows ([Results](#results)).

## Use it

With peftrec, which rebuilds the base model, prompt, label words and scoring from `peftrec_recipe.yaml`:

```python
import peftrec

recommender = peftrec.Recommender.from_pretrained("{{ repo_id }}")
```

```bash
# evaluate it again on its recipe's test split
python -m peftrec.evaluate adapter={{ repo_id }}
# recommend for one user
python -m peftrec.recommend adapter={{ repo_id }} user=USER_ID
```

{% if is_bottleneck %}
This head is peftrec's own **bottleneck Adapter** (Houlsby et al., 2019: down-projection, nonlinearity,
up-projection and a residual after each block's attention and MLP). peft has no such head type, so
`PeftModel.from_pretrained` cannot load it: use peftrec (above). Its files follow peft's layout
(`adapter_config.json` with `"peft_type": "BOTTLENECK"`, `adapter_model.safetensors`).
{% else %}
With plain peft and transformers (the head only; the prompt and scoring are described below):

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{{ base_model or "BASE_MODEL" }}")
tokenizer = AutoTokenizer.from_pretrained("{{ base_model or "BASE_MODEL" }}")
model = PeftModel.from_pretrained(base, "{{ repo_id }}")
```
{% endif %}
{% if not base_model %}

### Base model

The run used a local model folder (`{{ model_name }}`), so this card names no Hub base model.
Load the same weights in its place.
{% elif base_model_given %}

The run loaded its base model as `{{ model_name }}`; it was published as {{ base_model }}
(`base_model_name_or_path` in `adapter_config.json` and `model.name` in `peftrec_recipe.yaml` name it).
{% endif %}

## Prompt

Template (`task.template`; the user's history fills the placeholders):

```text
{{ config.task.template }}
```

- Answer: {{ label_words }}.
- Chat template: {{ "used (`model.chat_template=true`): the prompt is the user turn and the answer follows the assistant turn's opening" if config.model.chat_template else "not used: plain text" }}.
{% if answer_cue %}
  Without a chat template the prompt ends with the cue `{{ answer_cue }}`.
{% endif %}
- Longest prompt: {{ config.task.max_length }} tokens (longer histories lose their oldest items).

## Protocol

- Split (`data.protocol={{ config.data.protocol }}`): {{ protocol }}{% if config.data.protocol in ("tallrec", "full", "random") %}, fractions {{ config.data.fractions }}{% endif %}{% if config.data.protocol == "tallrec" %}, `last_n={{ config.data.last_n }}`{% endif %}.
- An example is a rating with the user's {{ config.data.history_len }} previous ratings as history (`data.history_len`){% if result.task == "click" %}; liked means rating > {{ config.data.like_threshold }} (`data.like_threshold`){% endif %}.
{% if config.data.get("train_shots") %}
- Few-shot: {{ config.data.train_shots }} training examples drawn with seed {{ result.seed }}.
{% endif %}
{% if config.data.get("cold_start") %}
- Cold start (`data.cold_start={{ config.data.cold_start }}`): {{ config.data.cold_fraction }} of the test {{ config.data.cold_start }} never occur in training.
{% endif %}
- Split fingerprint: `{{ result.split.fingerprint }}` (the same data, protocol and seed give the same fingerprint for every method and baseline).

| split | examples | evaluated | users |
|---|---|---|---|
{% for row in split_rows %}
{{ row }}
{% endfor %}

## Results

Best step by validation `{{ config.task.select_metric }}`, tested once. The 95% intervals resample test users
(bootstrap), since a few users can make most of a test set. Baselines are classical recommenders on the very
same test rows.

{{ result_header }}
{% for row in result_rows %}
{{ row }}
{% endfor %}

## Training

- Head: `{{ result.method }}` ({{ result.head.peft_type if result.head else "-" }}): {{ head_settings or "-" }}.
- Trainable parameters: {{ "{:,}".format(params.trainable) }} of {{ "{:,}".format(params.total) }} ({{ "%.3f"|format(100 * params.trainable_share) }}%).
- Steps: {{ config.trainer.max_steps }} x batch {{ config.trainer.batch_size }}{% if config.trainer.grad_accum > 1 %} x {{ config.trainer.grad_accum }} accumulated{% endif %}, learning rate {{ config.trainer.optimizer.lr }} ({{ config.trainer.scheduler }}), validation every {{ config.trainer.eval_every }} steps; best step {{ result.best_step }}.
- Seed: {{ result.seed }}; precision: {{ result.get("precision", "-") }}; device: {{ result.get("device", {}).get("name", "-") }}.
- Peak memory: {{ memory }}.
- Speed: train {{ "%.2f"|format(speed.train_samples_per_s) if "train_samples_per_s" in speed else "-" }} samples/s, test {{ "%.2f"|format(speed.eval_samples_per_s) if "eval_samples_per_s" in speed else "-" }} samples/s; wall {{ wall }}.
- Versions: peftrec {{ versions.get("peftrec") }} (git {{ git.get("commit") or "unknown" }}{% if git.get("dirty") %}, with uncommitted changes{% endif %}), torch {{ versions.get("torch") }}, transformers {{ versions.get("transformers") }}, peft {{ versions.get("peft") }}.
- Command: `{{ command }}`

## Files

| file | bytes | what |
|---|---|---|
{% for name, size in files %}
| `{{ name }}` | {{ "{:,}".format(size) }} | {{ {"adapter_config.json": "the head's config", "adapter_model.safetensors": "the head's weights (best step)", "peftrec_recipe.yaml": "the resolved config that trained the head (base model, task, prompt)", "config.yaml": "the run's resolved config", "result.json": "the run record: metrics, intervals, baselines, parameters, memory, speed, versions"}.get(name, "") }} |
{% endfor %}

{% if config.data.get("source", "") and config.data.source.startswith("movielens") %}
MovieLens is for research use and may not be redistributed: this repository holds no data.
{% endif %}
"""
