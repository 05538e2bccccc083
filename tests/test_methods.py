"""Every head x every task on the tiny random Llama: counts, frozen base, learning, save/load, merge, errors.

The heads are built from the shipped ``conf/peft/*.yaml`` (composed by Hydra, as a run builds them),
so these tests cover what users run. The tiny model (tests/conftest.py): hidden 64, MLP 128, 2 layers,
4 query heads and 2 key/value heads of 16 dims, so q,o: 64->64, k,v: 64->32, gate,up: 64->128,
down: 128->64.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import PeftConfig, PeftModel

from peftrec import models as models_lib
from peftrec.__main__ import register_recipes
from peftrec.batching import make_loader
from peftrec.errors import PeftrecError
from peftrec.methods import (
    apply_head,
    load_head,
    merge_head,
    prepended_tokens,
    runtime_head_values,
    save_head,
    saved_head_summary,
    training_hooks,
)
from peftrec.models import count_parameters, load_base_model, load_tokenizer
from peftrec.paths import CONF_DIR, RECIPES_DIR
from peftrec.tasks import label_scoring
from peftrec.tasks.click import ClickPrompt, ClickTask
from peftrec.tasks.label_scoring import label_logits

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


@dataclass(frozen=True)
class Head:
    """One row of the matrix: a conf/peft option (+ overrides), its exact trainable count, what it allows."""

    conf: str
    overrides: tuple[str, ...]
    trainable: int
    frozen_extra: int  # frozen parameters the head adds besides the base model's
    mergeable: bool
    lr: float


HEADS = {
    # LoRA r=8 on q,v: r x (in + out) per layer: q 8x(64+64) = 1,024; v 8x(64+32) = 768; x 2 layers.
    "lora": Head("lora", (), (8 * (64 + 64) + 8 * (64 + 32)) * 2, 0, True, 1e-2),
    # rsLoRA changes only the scale (alpha / sqrt(r)): the same count as LoRA.
    "lora_rslora": Head("lora", ("peft.use_rslora=true",), (8 * (64 + 64) + 8 * (64 + 32)) * 2, 0, True, 1e-2),
    # DoRA adds a magnitude per output feature: LoRA's count + (q 64 + v 32) x 2 layers.
    "lora_dora": Head("lora", ("peft.use_dora=true",), (8 * (64 + 64) + 8 * (64 + 32) + 64 + 32) * 2, 0, True, 1e-2),
    # QLoRA's LoRA (here on the unquantised model): r=8 on all 7 linear layers, r x (in + out) each:
    # q 8x128 + k 8x96 + v 8x96 + o 8x128 + gate 8x192 + up 8x192 + down 8x192 = 8,192 per layer; x 2.
    "qlora": Head("qlora", (), 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192) * 2, 0, True, 1e-2),
    # AdaLoRA init_r=12 on q,v: P (r x in) + Q (out x r) + E (r) per layer: q 12x(64+64+1) = 1,548;
    # v 12x(64+32+1) = 1,164; x 2 layers. Plus a frozen rank counter (1 value) per adapted layer: 4.
    "adalora": Head(
        "adalora",
        ("trainer.max_steps=8", "peft.tinit=1", "peft.tfinal=3"),
        (12 * (64 + 64 + 1) + 12 * (64 + 32 + 1)) * 2,
        4,
        True,
        1e-2,
    ),
    # IA3: a vector per output of k (32) and v (32), per input of down_proj (128): 192 per layer; x 2.
    "ia3": Head("ia3", (), (32 + 32 + 128) * 2, 0, True, 3e-2),
    # Prefix tuning, 20 virtual tokens: K and V for every layer, 2 kv heads x 16 dims: 20 x 2 x 2 x 32.
    "prefix": Head("prefix", (), 20 * 2 * 2 * 32, 0, False, 3e-2),
    # With the reparameterisation MLP (hidden = the K,V width, 32): embedding 20x32 + Linear(32->32)
    # (32x32 + 32) + Linear(32 -> layers x 2 x 32 = 128) (32x128 + 128).
    "prefix_projection": Head(
        "prefix", ("peft.prefix_projection=true",), 20 * 32 + (32 * 32 + 32) + (32 * 128 + 128), 0, False, 1e-2
    ),
    # Prompt tuning, 20 virtual tokens of the hidden size: 20 x 64.
    "prompt_tuning": Head("prompt_tuning", (), 20 * 64, 0, False, 3e-2),
    # Bottleneck adapter (peftrec's own), reduction factor 16: b = 64 / 16 = 4; per adapter down 64x4 + 4
    # and up 4x64 + 64 = 580; Houlsby places two per layer (after attention and after the MLP): x 2 x 2.
    "adapter": Head("adapter", (), (2 * 64 * 4 + 4 + 64) * 2 * 2, 0, False, 1e-3),
}
TASKS = ["click"]  # the tasks that exist; each head runs on each


def compose_config(*overrides: str):
    """The run config as ``python -m peftrec recipe=lora_click OVERRIDES`` composes it."""
    register_recipes()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def build_head(head: Head, model_dir, *extra: str) -> PeftConfig:
    """Build the head config as the runner does: the composed conf + run-time values."""
    cfg = compose_config(f"peft={head.conf}", *head.overrides, *extra)
    return instantiate(cfg.peft, **runtime_head_values(OmegaConf.to_container(cfg.peft, resolve=True), model_path=model_dir))


def click_task(tokenizer) -> ClickTask:
    return ClickTask(
        tokenizer,
        ClickPrompt(template="Liked: {liked}. Disliked: {disliked}. Will the user like \"{target}\"?", like_threshold=3.0,
                    chat_template=True),
    )


def click_batch(tokenizer, task: ClickTask) -> dict[str, torch.Tensor]:
    """Eight examples with histories of 0-3 titles (so rows differ in length and get right padding)."""
    titles = {str(i): (f"Good Movie {i}" if i < 8 else f"Bad Movie {i - 8}") for i in range(16)}
    rows = [
        {"history_item_ids": [str(j) for j in range(k % 4)], "history_ratings": [5.0, 1.0, 5.0][: k % 4],
         "item_id": str(k * 2 % 16), "label": int(k * 2 % 16 < 8)}
        for k in range(8)
    ]
    loader = make_loader(task.dataset(pd.DataFrame(rows), titles), tokenizer, batch_size=8, train=False)
    batch = next(iter(loader))
    assert not batch["attention_mask"].all() and batch["attention_mask"][:, 0].all(), "want right padding"
    return batch


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir, max_length=128)


def fresh_base(model_dir, **kwargs):
    torch.manual_seed(0)
    return load_base_model(model_dir, precision="fp32", **kwargs)


def train_steps(model, task, batch, *, lr: float, steps: int) -> list[float]:
    """A few optimizer steps on a fixed batch, with the head's hooks in the order train() calls them."""
    hooks = training_hooks(model)
    loss_fn = hooks.wrap_loss(task.loss)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        if hooks.after_optimizer_step is not None:
            hooks.after_optimizer_step(step)
        optimizer.zero_grad(set_to_none=True)
        losses.append(task.loss(model, batch).item())
    model.eval()
    return losses


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("name", list(HEADS))
def test_head_counts_trains_saves_loads_and_merges(name, task_name, tiny_model_dir, tokenizer, tmp_path):
    head = HEADS[name]
    task = click_task(tokenizer)
    batch = click_batch(tokenizer, task)
    base = fresh_base(tiny_model_dir)
    _, base_total = count_parameters(base)
    model = apply_head(base, build_head(head, tiny_model_dir))

    # Exact counts: the head's hand-computed size; the base is all there and all frozen.
    trainable, total = count_parameters(model)
    assert trainable == head.trainable
    assert total == base_total + head.trainable + head.frozen_extra
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    losses_before = task.loss(model.eval(), batch).item()
    losses = train_steps(model, task, batch, lr=head.lr, steps=8)
    assert losses[-1] < losses_before, f"{name}: loss {losses_before:.4f} -> {losses}"
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), f"{name}: frozen {n} changed"

    # Save -> load on a fresh base -> the same label logits.
    with torch.no_grad():
        trained = label_logits(model, batch["input_ids"], batch["attention_mask"], task.label_ids)
    folder = save_head(model, tmp_path / "adapter")
    loaded = load_head(fresh_base(tiny_model_dir), folder)
    with torch.no_grad():
        reloaded = label_logits(loaded, batch["input_ids"], batch["attention_mask"], task.label_ids)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)

    # Merge where the head is a weight update; a clear error where it is not.
    if head.mergeable:
        merged = merge_head(model)
        assert not isinstance(merged, PeftModel)
        assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
        with torch.no_grad():
            after = label_logits(merged, batch["input_ids"], batch["attention_mask"], task.label_ids)
        torch.testing.assert_close(after, trained, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(PeftrecError, match="cannot be merged into the base"):
            merge_head(model)


@pytest.mark.parametrize("per_row", [True, False], ids=["per-row-positions", "shared-positions"])
@pytest.mark.parametrize("name", list(HEADS))
def test_label_logits_read_each_rows_last_real_token_through_the_head(name, per_row, tiny_model_dir, tokenizer, monkeypatch):
    """Right-padded batch through the head == each row alone, unpadded, at its last position."""
    # Both ways label_logits asks for positions (transformers 5 per row; older releases shared).
    monkeypatch.setattr(label_scoring, "_PER_ROW_LOGITS_TO_KEEP", per_row)
    head = HEADS[name]
    task = click_task(tokenizer)
    batch = click_batch(tokenizer, task)
    model = apply_head(fresh_base(tiny_model_dir), build_head(head, tiny_model_dir)).eval()
    with torch.no_grad():
        got = label_logits(model, batch["input_ids"], batch["attention_mask"], task.label_ids)
        for row in range(len(got)):
            n = int(batch["attention_mask"][row].sum())
            alone = batch["input_ids"][row : row + 1, :n]
            out = model(input_ids=alone, attention_mask=torch.ones_like(alone))
            # Prompt tuning: peft's logits include the virtual tokens in front (the last is still last).
            assert out.logits.shape[1] == n + prepended_tokens(model)
            torch.testing.assert_close(got[row], out.logits[0, -1, task.label_ids], rtol=1e-4, atol=1e-4)


def test_prompt_tuning_positions_are_shifted_by_the_virtual_tokens(tiny_model_dir, tokenizer):
    config = build_head(HEADS["prompt_tuning"], tiny_model_dir)
    model = apply_head(fresh_base(tiny_model_dir), config).eval()
    assert prepended_tokens(model) == config.num_virtual_tokens == 20
    # Initialised from the phrase's token embeddings (TEXT init, tokenizer from the model folder).
    phrase_ids = tokenizer(config.prompt_tuning_init_text)["input_ids"]
    embeddings = model.get_base_model().get_input_embeddings().weight
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight[0], embeddings[phrase_ids[0]])


@pytest.mark.parametrize(
    ("name", "extra"),
    [("lora", ()), ("qlora", ()), ("adalora", ()), ("ia3", ("peft.feedforward_modules=[]",))],
)
def test_targets_the_model_lacks_are_named_with_the_layers_it_has(name, extra, tiny_model_dir):
    config = build_head(HEADS[name], tiny_model_dir, "peft.target_modules=[query,value]", *extra)
    with pytest.raises(PeftrecError) as err:
        apply_head(fresh_base(tiny_model_dir), config)
    message = str(err.value)
    assert "['query', 'value'] matches no layer" in message
    assert "Its linear layers are named: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in message
    assert "peft.target_modules=all-linear" in message


def test_a_bottleneck_config_goes_to_the_bottleneck_module(monkeypatch):
    """apply_head hands peftrec's own adapter config to methods/bottleneck.py (imported only then)."""
    import sys
    import types

    class BottleneckConfig:
        pass

    fake = types.ModuleType("peftrec.methods.bottleneck")
    fake.BottleneckConfig = BottleneckConfig
    fake.apply_bottleneck = lambda model, config: ("bottleneck", model, config)
    monkeypatch.setitem(sys.modules, "peftrec.methods.bottleneck", fake)
    config, model = BottleneckConfig(), torch.nn.Linear(2, 2)
    assert apply_head(model, config) == ("bottleneck", model, config)
    with pytest.raises(PeftrecError, match="not a head peftrec knows"):
        apply_head(model, object())


def test_a_head_config_peft_refuses_is_a_peftrec_error_naming_it():
    from peftrec.run import build_head_config

    cfg = compose_config("peft=ia3", "peft.target_modules=[q_proj]")  # down_proj is still a feedforward module
    with pytest.raises(PeftrecError, match="feedforward_modules"):
        build_head_config(cfg.peft)


def test_prefix_tuning_with_gradient_checkpointing_names_the_knob(tiny_model_dir):
    base = fresh_base(tiny_model_dir, gradient_checkpointing=True)
    with pytest.raises(PeftrecError, match="model.gradient_checkpointing=false"):
        apply_head(base, build_head(HEADS["prefix"], tiny_model_dir))


@pytest.mark.parametrize(
    "checkpointing, quantization",
    [
        (False, None),
        (True, None),
        pytest.param(True, "4bit", marks=pytest.mark.skipif(not HAS_BNB, reason="needs bitsandbytes")),
    ],
)
def test_loading_wrapping_and_reloading_set_off_no_deprecation_warning(
    checkpointing, quantization, tiny_model_dir, tmp_path
):
    # transformers 5.23 deprecated gradient_checkpointing_enable and is_gradient_checkpointing (FutureWarnings a
    # user cannot act on): peftrec calls the new name, and peft, which reads the old one as it wraps, is quieted.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = fresh_base(tiny_model_dir, gradient_checkpointing=checkpointing, quantization=quantization)
        model = apply_head(base, build_head(HEADS["lora"], tiny_model_dir))
        loaded = load_head(fresh_base(tiny_model_dir), save_head(model, tmp_path / "adapter"))
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []
    # Checkpointing is still on (both layers) or off, and the inputs require grad only when it is on.
    assert models_lib.checkpointed_layers(model) == ([0, 1] if checkpointing else [])
    assert hasattr(model.base_model.model, "_require_grads_hook") == checkpointing
    assert isinstance(loaded, PeftModel)


def test_adalora_allocates_ranks_after_every_optimizer_step_of_the_training_loop(
    tiny_model_dir, tokenizer, tmp_path, monkeypatch
):
    """Through the real train(): update_and_allocate each step, with gradients; the final pattern is saved."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from peftrec.train import TrainSettings, train

    steps = 8
    head = HEADS["adalora"]
    model = apply_head(fresh_base(tiny_model_dir), build_head(head, tiny_model_dir, f"trainer.max_steps={steps}"))
    tuner = model.base_model
    calls = []
    allocate = tuner.update_and_allocate

    def spy(global_step):
        grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
        calls.append((global_step, all(g is not None for g in grads)))
        allocate(global_step)

    monkeypatch.setattr(tuner, "update_and_allocate", spy)
    task = click_task(tokenizer)
    titles = {str(i): f"Good Movie {i}" for i in range(8)}
    rows = pd.DataFrame({"history_item_ids": [["0"]] * 16, "history_ratings": [[5.0]] * 16,
                         "item_id": [str(i % 8) for i in range(16)], "label": [i % 2 for i in range(16)]})
    loader = make_loader(task.dataset(rows, titles), tokenizer, batch_size=4, train=True)
    hooks = training_hooks(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    try:
        accelerator = Accelerator()
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        train(
            model, loss_fn=hooks.wrap_loss(task.loss), train_loader=loader, validate=lambda: {"auc": 0.5},
            optimizer=optimizer, scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
            accelerator=accelerator,
            settings=TrainSettings(max_steps=steps, eval_every=100, log_every=100, max_grad_norm=1.0,
                                   select_metric="auc", higher_is_better=True),
            after_optimizer_step=hooks.after_optimizer_step,
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    # peft's global_step counts from 0; every call saw the gradients (before zero_grad).
    assert calls == [(step, True) for step in range(steps)]
    config = model.peft_config["default"]
    assert config.rank_pattern is not None  # fixed at total_step - tfinal = 5
    summary = saved_head_summary(save_head(model, tmp_path / "adapter"))
    assert summary["peft_type"] == "ADALORA" and summary["init_r"] == 12 and summary["target_r"] == 8
    assert set(summary["rank_pattern"]) == {
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    }
    # The budget: target_r x 4 layers (fewer only on tied importance scores).
    assert 0 < summary["total_rank"] <= 8 * 4
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["rank_pattern"]


def test_adalora_checkpoint_taken_while_pruning_reloads_exactly(tiny_model_dir, tokenizer, tmp_path):
    """The best validation step can fall mid-schedule: with the conf's deltaT=1 its saved adapter is exact."""
    head = HEADS["adalora"]
    config = build_head(head, tiny_model_dir)
    assert config.deltaT == 1  # the shipped value
    task = click_task(tokenizer)
    batch = click_batch(tokenizer, task)
    model = apply_head(fresh_base(tiny_model_dir), config)
    train_steps(model, task, batch, lr=head.lr, steps=3)  # total_step 8, tinit 1: step 3 is in the pruning phase
    assert model.peft_config["default"].rank_pattern is not None
    with torch.no_grad():
        live = label_logits(model, batch["input_ids"], batch["attention_mask"], task.label_ids)
    loaded = PeftModel.from_pretrained(fresh_base(tiny_model_dir), save_head(model, tmp_path / "adapter")).eval()
    with torch.no_grad():
        reloaded = label_logits(loaded, batch["input_ids"], batch["attention_mask"], task.label_ids)
    torch.testing.assert_close(reloaded, live, rtol=1e-5, atol=1e-5)


def test_adalora_penalty_is_peft_s_orthogonal_regularisation(tiny_model_dir):
    from peftrec.methods.hooks import orthogonality_penalty

    model = apply_head(fresh_base(tiny_model_dir), build_head(HEADS["adalora"], tiny_model_dir))
    hooks = training_hooks(model)
    assert hooks.regularizer is not None and hooks.after_optimizer_step is not None
    factors = [(n, p) for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]
    expected = sum(
        torch.linalg.matrix_norm((p @ p.T if "lora_A" in n else p.T @ p) - torch.eye(12)) for n, p in factors
    ) / len(factors)
    torch.testing.assert_close(hooks.regularizer(), 0.5 * expected)
    assert orthogonality_penalty([]) == 0


@pytest.mark.parametrize("name", ["lora", "ia3", "prefix", "prompt_tuning"])
def test_heads_without_hooks_get_none(name, tiny_model_dir):
    hooks = training_hooks(apply_head(fresh_base(tiny_model_dir), build_head(HEADS[name], tiny_model_dir)))
    assert hooks.after_optimizer_step is None and hooks.regularizer is None
    loss_fn = object()
    assert hooks.wrap_loss(loss_fn) is loss_fn


def test_quantization_without_bitsandbytes_names_the_install(tiny_model_dir, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        models_lib.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    with pytest.raises(PeftrecError, match=r'pip install "peftrec\[quant\]"'):
        load_base_model(tiny_model_dir, precision="fp32", quantization="4bit")


def test_unknown_quantization_is_refused(tiny_model_dir):
    with pytest.raises(PeftrecError, match="not one of null, 4bit, 8bit"):
        load_base_model(tiny_model_dir, precision="fp32", quantization="3bit")


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is an optional extra (pip install 'peftrec[quant]')")
def test_qlora_on_a_4bit_base_counts_logically_trains_reloads_and_merges(tiny_model_dir, tokenizer, tmp_path, caplog):
    head = HEADS["qlora"]
    task = click_task(tokenizer)
    batch = click_batch(tokenizer, task)
    _, full_total = count_parameters(fresh_base(tiny_model_dir))
    base = fresh_base(tiny_model_dir, quantization="4bit")
    assert any(type(p).__name__ == "Params4bit" for p in base.parameters())
    # Packed 4-bit weights count as their logical size: the same total as the full-precision model.
    assert count_parameters(base) == (0, full_total)
    model = apply_head(base, build_head(head, tiny_model_dir))
    assert count_parameters(model) == (head.trainable, full_total + head.trainable)
    before = task.loss(model.eval(), batch).item()
    losses = train_steps(model, task, batch, lr=head.lr, steps=8)
    assert losses[-1] < before
    with torch.no_grad():
        trained = label_logits(model, batch["input_ids"], batch["attention_mask"], task.label_ids)
    folder = save_head(model, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(fresh_base(tiny_model_dir, quantization="4bit"), folder).eval()
    with torch.no_grad():
        reloaded = label_logits(loaded, batch["input_ids"], batch["attention_mask"], task.label_ids)
    torch.testing.assert_close(reloaded, trained, rtol=1e-4, atol=1e-4)
    # Merging into NF4 weights requantises them: it works, and says it is lossy.
    with caplog.at_level("WARNING", logger="peftrec.methods.merge"):
        merged = merge_head(loaded)
    assert "requantises" in caplog.text and not isinstance(merged, PeftModel)


# --- recipes -------------------------------------------------------------------------------------

RECIPE_HEADS = {
    "lora_click": "peft.LoraConfig",
    "adalora_click": "peft.AdaLoraConfig",
    "prefix_click": "peft.PrefixTuningConfig",
    "ia3_click": "peft.IA3Config",
    "prompt_tuning_click": "peft.PromptTuningConfig",
    "qlora_click": "peft.LoraConfig",
    "adapter_click": "peftrec.methods.bottleneck.BottleneckConfig",
}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_composes_and_builds_its_head(recipe, tiny_model_dir):
    cfg = compose_config(f"recipe={recipe}")
    assert cfg.peft._target_ == RECIPE_HEADS.get(recipe, cfg.peft._target_)
    peft_cfg = OmegaConf.to_container(cfg.peft, resolve=True)
    config = instantiate(cfg.peft, **runtime_head_values(peft_cfg, model_path=tiny_model_dir))
    assert isinstance(config, PeftConfig) or type(config).__name__ == "BottleneckConfig"
    assert cfg.model.quantization == ("4bit" if recipe == "qlora_click" else None)
    if recipe == "adalora_click":
        assert config.total_step == cfg.trainer.max_steps == 48


def test_peft_on_the_command_line_replaces_the_recipes_head():
    cfg = compose_config("recipe=lora_click", "peft=adalora", "trainer.max_steps=30")
    assert cfg.peft._target_ == "peft.AdaLoraConfig" and cfg.peft.total_step == 30


def test_runtime_values_fill_the_tokenizer_only_for_text_initialised_prompt_tuning(tmp_path):
    text = {"_target_": "peft.PromptTuningConfig", "prompt_tuning_init": "TEXT", "tokenizer_name_or_path": None}
    assert runtime_head_values(text, model_path=tmp_path) == {"tokenizer_name_or_path": str(tmp_path)}
    assert runtime_head_values({**text, "tokenizer_name_or_path": "mine"}, model_path=tmp_path) == {}
    assert runtime_head_values({**text, "prompt_tuning_init": "RANDOM"}, model_path=tmp_path) == {}
    assert runtime_head_values({"_target_": "peft.LoraConfig"}, model_path=tmp_path) == {}


# The CLI, one short run per recipe: each recipe's head trains, is recorded, and its adapter saved.
CLI_EXTRA = {
    "adalora_click": ("peft.tinit=0", "peft.tfinal=1"),  # a 2-step schedule: 1 budgeting, 1 fixed
    # The toy catalog has 16 movies and users have seen most of them: a short list.
    "lora_generative": ("task.top_k=2", "task.num_beams=2", "task.metrics=[hit@1,ndcg@2,valid_ratio]",
                        "task.select_metric=ndcg@2", "trainer.max_test_examples=8"),
    "baselines_generative": ("task.baselines=[popularity]", "task.top_k=2", "task.metrics=[hit@1,ndcg@2]"),
}  # fmt: skip
# Protocols the recipes choose (the toy command line otherwise sets data.protocol=full).
CLI_PROTOCOL = {"lora_rating": "per_user", "lora_generative": "per_user", "baselines_rating": "per_user",
                "baselines_generative": "per_user"}  # fmt: skip
CLI_TRAINABLE = {
    "lora_click": HEADS["lora"].trainable,
    "adalora_click": HEADS["adalora"].trainable,
    "prefix_click": HEADS["prefix"].trainable,
    "ia3_click": HEADS["ia3"].trainable,
    "prompt_tuning_click": HEADS["prompt_tuning"].trainable,
    "qlora_click": HEADS["qlora"].trainable,
}


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_runs_two_steps_from_the_command_line(recipe, tiny_model_dir, toy_csv, tmp_path):
    from test_cli import peftrec, toy_overrides

    run_dir = tmp_path / "run"
    proc = peftrec(
        *toy_overrides(
            tiny_model_dir, toy_csv, run_dir, "trainer.max_steps=2", "trainer.eval_every=2", "trainer.batch_size=8",
            "trainer.max_eval_examples=16", *CLI_EXTRA.get(recipe, ()), recipe=recipe,
            protocol=CLI_PROTOCOL.get(recipe, "full"),
        ),
        cwd=tmp_path,
    )
    if recipe == "qlora_click" and not HAS_BNB:
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert 'pip install "peftrec[quant]"' in proc.stderr and "Traceback" not in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    if recipe.startswith("baselines_"):  # no model: every baseline on the split, one record
        assert result["recipe"] == recipe and result["method"] == "baselines" and result["baselines"]
        return
    assert result["recipe"] == recipe and result["steps"] == 2
    if recipe in CLI_TRAINABLE:
        assert result["params"]["trainable"] == CLI_TRAINABLE[recipe]
    assert result["adapter"]["bytes"] > 0
    assert result["head"]["peft_type"] == json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["peft_type"]
    if recipe == "adalora_click":
        ranks = result["head"]["rank_pattern"]
        assert len(ranks) == 4 and 0 < sum(ranks.values()) <= 8 * 4
