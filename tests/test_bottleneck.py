"""The bottleneck Adapter on tiny random Llama and Gemma-3 models (CPU, a few seconds in all).

Parameter counts are computed by hand. One adapter on hidden size h with bottleneck b has
down: h*b weight + b bias, up: b*h weight + h bias  ->  2*h*b + b + h.
The tiny Llama (conftest.build_tiny_model): h=64, 2 layers. With b=8 one adapter is
64*8 + 8 + 8*64 + 64 = 1,096; houlsby has 2 per layer -> 2 * 2 * 1,096 = 4,384; pfeiffer 1 per
layer -> 2,192. reduction_factor=16 gives b = 64 // 16 = 4: 64*4 + 4 + 4*64 + 64 = 580 per adapter,
houlsby 4 * 580 = 2,320.
"""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from peftrec.errors import PeftrecError
from peftrec.methods.apply import save_head
from peftrec.methods.bottleneck import (
    BottleneckAdapter,
    BottleneckConfig,
    BottleneckModel,
    _AdapterHook,
    apply_bottleneck,
)
from peftrec.models import count_parameters, load_base_model
from peftrec.paths import CONF_DIR
from peftrec.tasks.label_scoring import label_logits
from peftrec.train import load_trainable_state, trainable_state

HOULSBY_B8 = 2 * 2 * (64 * 8 + 8 + 8 * 64 + 64)  # 4,384
PFEIFFER_B8 = 2 * 1 * (64 * 8 + 8 + 8 * 64 + 64)  # 2,192
HOULSBY_RF16 = 2 * 2 * (64 * 4 + 4 + 4 * 64 + 64)  # 2,320
B8 = {"bottleneck_size": 8, "reduction_factor": None}


def _base(model_dir, **kwargs):
    return load_base_model(model_dir, precision=kwargs.pop("precision", "fp32"), **kwargs)


def _batch(vocab_size: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """4 right-padded rows of random tokens; the LM loss on real tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (4, 12), generator=generator)
    lengths = torch.tensor([12, 9, 12, 7])
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _train(model, batch, steps: int = 8, lr: float = 1e-2) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _tiny_gemma3() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=128,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],  # exercise both of Gemma-3's kinds
        pad_token_id=0,
    )
    model = Gemma3ForCausalLM(config)
    model.requires_grad_(False)
    return model.eval()


@pytest.mark.parametrize(("placement", "expected"), [("houlsby", HOULSBY_B8), ("pfeiffer", PFEIFFER_B8)])
def test_trainable_count_matches_the_hand_formula(tiny_model_dir, placement, expected):
    base = _base(tiny_model_dir)
    _, base_total = count_parameters(base)
    model = apply_bottleneck(base, BottleneckConfig(**B8, placement=placement))
    trainable, total = count_parameters(model)
    assert trainable == expected
    assert total == base_total + expected
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("adapters.") for n in names)
    kinds = {"houlsby": {"attention", "mlp"}, "pfeiffer": {"mlp"}}[placement]
    assert {n.split(".")[2] for n in names} == kinds
    assert model.adapter_config.layers_module == "model.layers"
    assert model.adapter_config.mlp_module == "mlp"


def test_reduction_factor_sets_the_width_from_the_hidden_size(tiny_model_dir):
    model = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(reduction_factor=16))
    assert model.bottleneck_dim == 64 // 16
    assert count_parameters(model)[0] == HOULSBY_RF16
    assert BottleneckConfig().resolve_bottleneck_size(64) == 4  # the default is reduction_factor=16


def test_width_must_be_given_exactly_once():
    with pytest.raises(PeftrecError, match="exactly one of bottleneck_size") as err:
        BottleneckConfig(bottleneck_size=8)  # reduction_factor keeps its default 16
    assert "peft.reduction_factor=null" in str(err.value)
    with pytest.raises(PeftrecError, match="exactly one"):
        BottleneckConfig(reduction_factor=None)
    with pytest.raises(PeftrecError, match="positive integer"):
        BottleneckConfig(bottleneck_size=0, reduction_factor=None)


def test_reduction_factor_larger_than_hidden_is_refused(tiny_model_dir):
    with pytest.raises(PeftrecError, match="leaves no bottleneck for hidden size 64"):
        apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(reduction_factor=128))


def test_bad_placement_nonlinearity_and_dropout_are_refused():
    with pytest.raises(PeftrecError, match="placement='middle' is not one of houlsby, pfeiffer"):
        BottleneckConfig(placement="middle")
    with pytest.raises(PeftrecError, match="nonlinearity='tanh' is not one of relu, gelu, silu"):
        BottleneckConfig(nonlinearity="tanh")
    with pytest.raises(PeftrecError, match="dropout"):
        BottleneckConfig(dropout=1.0)


def test_missing_attention_module_lists_the_block_children(tiny_model_dir):
    with pytest.raises(PeftrecError) as err:
        apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8, attention_module="attn_nope"))
    message = str(err.value)
    assert "attention attn_nope" in message
    assert "LlamaDecoderLayer" in message
    assert "self_attn, mlp, input_layernorm, post_attention_layernorm" in message
    assert "peft.attention_module" in message


def test_missing_mlp_module_and_layers_module_are_refused(tiny_model_dir):
    with pytest.raises(PeftrecError, match="MLP mlp_nope.*children are: self_attn, mlp"):
        apply_bottleneck(
            _base(tiny_model_dir), BottleneckConfig(**B8, placement="pfeiffer", mlp_module="mlp_nope")
        )
    with pytest.raises(PeftrecError, match="layers_module='model.blocks' is not a submodule"):
        apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8, layers_module="model.blocks"))
    with pytest.raises(PeftrecError, match="not a non-empty nn.ModuleList"):
        apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8, layers_module="model.norm"))


def test_logits_identical_to_the_base_at_init(tiny_model_dir):
    base = _base(tiny_model_dir)
    batch = _batch(base.config.vocab_size)
    expected = _logits(base, batch)
    last = label_logits(base, batch["input_ids"], batch["attention_mask"], [5, 6, 7])
    model = apply_bottleneck(base, BottleneckConfig(**B8))
    assert torch.equal(_logits(model, batch), expected)
    # The task's call: logits_to_keep as a (batch, 1) tensor passes through the wrapper.
    assert torch.equal(label_logits(model, batch["input_ids"], batch["attention_mask"], [5, 6, 7]), last)


def test_training_lowers_the_loss_and_leaves_the_base_untouched(tiny_model_dir):
    base = _base(tiny_model_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(0)
    model = apply_bottleneck(base, BottleneckConfig(**B8))
    losses = _train(model, _batch(base.config.vocab_size))
    assert losses[-1] < losses[0] - 0.1, losses
    after = model.get_base_model().state_dict()
    assert list(after) == list(before)  # same keys in the same order: nothing inserted into the base
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in model.get_base_model().parameters())
    assert all(bool(block[k].up.weight.abs().sum() > 0) for block in model.adapters for k in block)


def test_save_then_load_into_a_fresh_base_gives_identical_logits(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    model = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    batch = _batch(model.config.vocab_size)
    _train(model, batch, steps=4)
    trained = _logits(model, batch)

    folder = model.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["peft_type"] == "BOTTLENECK"
    assert saved["base_model_name_or_path"] == str(tiny_model_dir)
    assert saved["bottleneck_size"] == 8 and saved["placement"] == "houlsby"
    assert saved["attention_module"] == "self_attn" and saved["layers_module"] == "model.layers"
    tensors = load_file(folder / "adapter_model.safetensors")
    assert len(tensors) == 2 * 2 * 4  # (layers x adapters) x (down, up) x (weight, bias): no base weights
    assert all(k.startswith("adapters.") for k in tensors)
    assert sum(t.numel() for t in tensors.values()) == HOULSBY_B8

    loaded = BottleneckModel.from_pretrained(_base(tiny_model_dir), folder)
    assert torch.equal(_logits(loaded, batch), trained)
    assert count_parameters(loaded)[0] == 0  # inference mode by default, as peft
    resumed = BottleneckModel.from_pretrained(_base(tiny_model_dir), folder, is_trainable=True)
    assert count_parameters(resumed)[0] == HOULSBY_B8

    # Saving again replaces the folder atomically, and save_head (the runner's) works on it too.
    save_head(model, folder)
    model.save_pretrained(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_from_pretrained_refuses_other_folders(tiny_model_dir, tmp_path):
    model = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    folder = model.save_pretrained(tmp_path / "adapter")
    config_path = folder / "adapter_config.json"
    saved = json.loads(config_path.read_text())

    config_path.write_text(json.dumps({**saved, "peft_type": "LORA"}))
    with pytest.raises(PeftrecError, match="holds a 'LORA' adapter.*PeftModel.from_pretrained"):
        BottleneckModel.from_pretrained(_base(tiny_model_dir), folder)
    config_path.write_text(json.dumps({**saved, "hidden_size": 128}))
    with pytest.raises(PeftrecError, match="hidden size 128.*this base model's is 64"):
        BottleneckModel.from_pretrained(_base(tiny_model_dir), folder)
    config_path.write_text(json.dumps({**saved, "placement": "pfeiffer"}))  # weights for houlsby
    with pytest.raises(PeftrecError, match="do not fit this base model"):
        BottleneckModel.from_pretrained(_base(tiny_model_dir), folder)
    with pytest.raises(PeftrecError, match="is not an adapter folder"):
        BottleneckModel.from_pretrained(_base(tiny_model_dir), tmp_path)


def test_merge_and_unload_explains_why_it_cannot(tiny_model_dir):
    model = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    with pytest.raises(PeftrecError, match="cannot be merged into the base model: it is nonlinear"):
        model.merge_and_unload()


def test_disable_adapter_and_unload_give_back_the_base(tiny_model_dir):
    base = _base(tiny_model_dir)
    batch = _batch(base.config.vocab_size)
    expected = _logits(base, batch)
    torch.manual_seed(0)
    model = apply_bottleneck(base, BottleneckConfig(**B8))
    _train(model, batch, steps=3)
    assert not torch.equal(_logits(model, batch), expected)
    with model.disable_adapter():
        assert torch.equal(_logits(model, batch), expected)
    assert not torch.equal(_logits(model, batch), expected)
    with pytest.raises(PeftrecError, match="already has bottleneck adapters"):
        apply_bottleneck(base, BottleneckConfig(**B8))
    unloaded = model.unload()
    assert unloaded is base
    assert not any(isinstance(h, _AdapterHook) for m in base.modules() for h in m._forward_hooks.values())
    assert torch.equal(_logits(unloaded, batch), expected)


def test_module_overrides_accept_dotted_paths(tiny_model_dir):
    # o_proj's output is the attention's output and down_proj's the MLP's: the same model.
    torch.manual_seed(0)
    default = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    batch = _batch(default.config.vocab_size)
    _train(default, batch, steps=3)
    config = BottleneckConfig(**B8, attention_module="self_attn.o_proj", mlp_module="mlp.down_proj")
    dotted = apply_bottleneck(_base(tiny_model_dir), config)
    assert count_parameters(dotted)[0] == HOULSBY_B8
    dotted.adapters.load_state_dict(default.adapters.state_dict())
    torch.testing.assert_close(_logits(dotted, batch), _logits(default, batch))


def test_trainable_state_round_trip_used_by_the_loop(tiny_model_dir):
    torch.manual_seed(0)
    model = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    batch = _batch(model.config.vocab_size)
    _train(model, batch, steps=3)
    state = trainable_state(model)
    assert len(state) == 16 and sum(v.numel() for v in state.values()) == HOULSBY_B8
    fresh = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    load_trainable_state(fresh, state)
    assert torch.equal(_logits(fresh, batch), _logits(model, batch))


def test_gemma3_tiny_model(capsys):
    base = _tiny_gemma3()
    batch = _batch(base.config.vocab_size)
    expected = _logits(base, batch)
    model = apply_bottleneck(base, BottleneckConfig(**B8, nonlinearity="gelu"))
    assert model.adapter_config.attention_module == "self_attn"
    assert count_parameters(model)[0] == HOULSBY_B8  # also hidden 64, 2 layers
    assert torch.equal(_logits(model, batch), expected)
    losses = _train(model, batch)
    assert losses[-1] < losses[0] - 0.1, losses
    model.print_trainable_parameters()
    assert "trainable params: 4,384 ||" in capsys.readouterr().out

    pfeiffer = apply_bottleneck(_tiny_gemma3(), BottleneckConfig(**B8, placement="pfeiffer"))
    assert count_parameters(pfeiffer)[0] == PFEIFFER_B8


def test_gradient_checkpointing_recomputes_the_adapters_and_gives_the_same_gradients(tiny_model_dir):
    torch.manual_seed(0)
    plain = apply_bottleneck(_base(tiny_model_dir), BottleneckConfig(**B8))
    with torch.no_grad():  # non-zero up-projections, so every adapter weight gets a gradient
        for p in plain.adapters.parameters():
            p.add_(0.05 * torch.randn_like(p))
    checkpointed = apply_bottleneck(
        _base(tiny_model_dir, gradient_checkpointing=True), BottleneckConfig(**B8)
    )
    checkpointed.adapters.load_state_dict(plain.adapters.state_dict())
    assert all(layer.gradient_checkpointing for layer in checkpointed.get_base_model().model.layers)
    batch = _batch(plain.config.vocab_size)

    calls = {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        counter = calls.setdefault(name, [0])
        model.adapters[0]["attention"].register_forward_hook(lambda *_, c=counter: c.__setitem__(0, c[0] + 1))
        model.train()
        model(**batch).loss.backward()
    # The checkpointed block re-runs its forward (adapter included) during backward. (The attention
    # adapter is watched: torch's checkpoint stops recomputing once the last saved tensor is back,
    # which can be inside the MLP adapter, before its forward hooks would fire.)
    assert calls == {"plain": [1], "checkpointed": [2]}
    for (name, p), q in zip(
        plain.adapters.named_parameters(), checkpointed.adapters.parameters(), strict=True
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(q.grad, p.grad)

    checkpointed.zero_grad(set_to_none=True)
    losses = _train(checkpointed, batch)
    assert losses[-1] < losses[0] - 0.1, losses


def test_bf16_base_keeps_fp32_adapters(tiny_model_dir):
    base = _base(tiny_model_dir, precision="bf16")
    batch = _batch(base.config.vocab_size)
    expected = _logits(base, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the training loop's mixed precision
        expected_autocast = _logits(base, batch)
    torch.manual_seed(0)
    model = apply_bottleneck(base, BottleneckConfig(**B8))
    assert {p.dtype for p in model.adapters.parameters()} == {torch.float32}
    assert {p.dtype for p in model.get_base_model().parameters()} == {torch.bfloat16}
    assert torch.equal(_logits(model, batch), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(_logits(model, batch), expected_autocast)
    losses = _train(model, batch, steps=4)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0]
    assert {p.dtype for p in model.adapters.parameters()} == {torch.float32}
    assert all(bool(block[k].up.weight.abs().sum() > 0) for block in model.adapters for k in block)


def test_generate_uses_the_adapters_with_and_without_the_cache(tiny_model_dir):
    base = _base(tiny_model_dir)
    batch = _batch(base.config.vocab_size)
    prompt = {"input_ids": batch["input_ids"][:1, :6], "attention_mask": batch["attention_mask"][:1, :6]}
    greedy = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": base.config.pad_token_id}
    expected = base.generate(**prompt, **greedy)
    torch.manual_seed(0)
    model = apply_bottleneck(base, BottleneckConfig(**B8))
    assert torch.equal(model.generate(**prompt, **greedy), expected)
    _train(model, batch, steps=3)
    # The adapter is position-wise, so decoding one token at a time over the KV cache agrees.
    assert torch.equal(
        model.generate(**prompt, **greedy, use_cache=True),
        model.generate(**prompt, **greedy, use_cache=False),
    )


def test_hydra_conf_builds_the_config():
    conf = OmegaConf.load(CONF_DIR / "peft" / "adapter.yaml")
    assert instantiate(conf) == BottleneckConfig()
    narrow = instantiate(
        OmegaConf.merge(conf, {"bottleneck_size": 8, "reduction_factor": None, "placement": "pfeiffer"})
    )
    assert (narrow.bottleneck_size, narrow.reduction_factor, narrow.placement) == (8, None, "pfeiffer")


def test_config_dict_round_trip():
    config = BottleneckConfig(**B8, placement="pfeiffer", nonlinearity="silu", dropout=0.1)
    assert BottleneckConfig.from_dict(config.to_dict()) == config
    assert BottleneckConfig.from_dict({**config.to_dict(), "peft_type": "BOTTLENECK"}) == config
    with pytest.raises(PeftrecError, match=r"unknown keys \['bottleneck'\]"):
        BottleneckConfig.from_dict({"bottleneck": 8})


def test_adapter_is_identity_at_init_and_casts_back():
    adapter = BottleneckAdapter(16, 4, "silu")
    x = torch.randn(2, 3, 16, dtype=torch.bfloat16)
    assert torch.equal(adapter(x), x)
    assert adapter(x).dtype == torch.bfloat16
    assert adapter.up.weight.dtype == torch.float32
