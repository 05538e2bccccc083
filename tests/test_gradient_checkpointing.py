"""Gradient checkpointing on every n-th decoder layer (model.gradient_checkpointing_every): which layers
recompute their forward pass in the backward pass, and that the head's gradients do not change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from transformers import LlamaConfig, LlamaForCausalLM

from peftrec.errors import PeftrecError
from peftrec.methods import apply_head
from peftrec.models import checkpoint_only_every, checkpointed_layers, load_base_model

LAYERS = 5


@pytest.fixture(scope="module")
def five_layer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("five-layer-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def counted(forward, calls: list[int], index: int):
    def wrapped(*args, **kwargs):
        calls[index] += 1
        return forward(*args, **kwargs)

    return wrapped


def one_step(folder: Path, **checkpointing) -> tuple[list[int], torch.Tensor, dict[str, torch.Tensor]]:
    """LoRA (with dropout) on the base, one forward and backward pass on a fixed padded batch.

    Returns how often each decoder layer's MLP ran (twice where the layer is recomputed), the loss and the
    head's gradients."""
    model = load_base_model(folder, precision="fp32", **checkpointing)
    torch.manual_seed(1)
    model = apply_head(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.2, target_modules=["q_proj", "v_proj"]))
    calls = [0] * LAYERS
    for index, layer in enumerate(model.base_model.model.model.layers):
        # The MLP runs inside the layer's checkpointed forward, so a recomputation calls it again (its
        # forward method: torch does not run module hooks while it recomputes).
        layer.mlp.forward = counted(layer.mlp.forward, calls, index)
    model.train()
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    torch.manual_seed(3)  # the dropout masks; a recomputed layer must draw the same ones
    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return calls, loss.detach(), grads


def test_every_n_th_layer_is_recomputed_and_the_gradients_are_those_without_checkpointing(five_layer_dir):
    calls, loss, grads = one_step(five_layer_dir)
    assert calls == [1] * LAYERS
    for every, recomputed in ((1, [0, 1, 2, 3, 4]), (2, [0, 2, 4]), (4, [0, 4])):
        calls_n, loss_n, grads_n = one_step(
            five_layer_dir, gradient_checkpointing=True, gradient_checkpointing_every=every
        )
        assert calls_n == [2 if i in recomputed else 1 for i in range(LAYERS)], every
        torch.testing.assert_close(loss_n, loss, rtol=0, atol=0)
        assert grads_n.keys() == grads.keys() and len(grads) == 4 * LAYERS  # A and B of q and v per layer
        for name, grad in grads.items():
            torch.testing.assert_close(grads_n[name], grad, rtol=1e-6, atol=1e-7, msg=f"{name}, every {every}")
        assert any(grad.abs().sum() > 0 for grad in grads_n.values())


def test_checkpoint_only_every_returns_the_layers_kept_and_refuses_below_one(five_layer_dir):
    model = load_base_model(five_layer_dir, precision="fp32", gradient_checkpointing=True)
    assert checkpoint_only_every(model, 3) == [0, 3]
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False, False, True, False]
    assert checkpointed_layers(model) == [0, 3]
    assert checkpoint_only_every(model, 1) == [0, 3]  # the layers already off stay off
    with pytest.raises(PeftrecError, match=r"model.gradient_checkpointing_every=0: it must be 1"):
        checkpoint_only_every(model, 0)
    plain = load_base_model(five_layer_dir, precision="fp32")  # checkpointing off: no layer to keep
    assert checkpoint_only_every(plain, 1) == []
    with pytest.raises(PeftrecError, match="no decoder layer with gradient checkpointing on"):
        checkpoint_only_every(plain, 2)


def test_load_base_model_refuses_a_bad_share_before_loading_and_warns_when_checkpointing_is_off(
    five_layer_dir, tmp_path, caplog
):
    with pytest.raises(PeftrecError, match=r"model.gradient_checkpointing_every=0: it must be 1"):
        load_base_model(tmp_path / "no-model-here", precision="fp32", gradient_checkpointing_every=0)
    with caplog.at_level("WARNING", logger="peftrec.models"):
        model = load_base_model(five_layer_dir, precision="fp32", gradient_checkpointing_every=4)
    assert "model.gradient_checkpointing_every=4 has no effect: gradient checkpointing is off" in caplog.text
    assert checkpointed_layers(model) == []
    caplog.clear()
    with caplog.at_level("WARNING", logger="peftrec.models"):
        load_base_model(five_layer_dir, precision="fp32", gradient_checkpointing=True, gradient_checkpointing_every=4)
    assert "has no effect" not in caplog.text
