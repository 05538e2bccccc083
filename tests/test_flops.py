"""Model FLOPs, GPU peaks and MFU (peftrec.flops), the logit positions Throughput counts, and MemoryMonitor.

Every expected number is worked out by hand from the architecture, not read back from the code.
"""

from __future__ import annotations

import math
import resource

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from peftrec import record
from peftrec.flops import ModelShape, mfu, model_shape, peak_tflops, throughput_mfu
from peftrec.record import MemoryMonitor
from peftrec.train import Throughput

# Per layer: q 64x64 + k 64x32 + v 64x32 (2 kv heads x head dim 16) + o 64x64 = 12288,
# gate/up/down 3 x 64x128 = 24576; 36864 per layer, 2 layers.
TINY_BODY = 2 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128)
TINY_OUTPUT = 64 * 100
# Every parameter: embeddings 100x64, the body, RMSNorm weights (2 per layer + the final one) x 64, lm_head.
TINY_ALL = 100 * 64 + TINY_BODY + (2 * 2 + 1) * 64 + TINY_OUTPUT
# LoRA r=4 on q (64 -> 64): A 4x64 + B 64x4; on v (64 -> 32): A 4x64 + B 32x4; 2 layers.
TINY_LORA = 2 * ((4 * 64 + 64 * 4) + (4 * 64 + 32 * 4))


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
        )
    )


def test_hand_constants():
    assert TINY_BODY == 73728 and TINY_OUTPUT == 6400 and TINY_LORA == 1792 and TINY_ALL == 86848


def test_model_shape_of_a_plain_llama_counts_every_matmul_weight_once():
    model = tiny_llama()
    shape = model_shape(model)
    assert shape == ModelShape(
        body_weights=TINY_BODY,
        output_weights=TINY_OUTPUT,
        layers=2,
        attention_width=64,  # 4 heads x head dim 16 (the query width, not the 2 kv heads' 32)
        trainable=TINY_ALL,
    )
    assert shape.trainable == sum(p.numel() for p in model.parameters())


def test_model_shape_of_a_lora_model_counts_the_adapters_once_and_only_them_as_trainable():
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    shape = model_shape(model)
    # The LoRA wrappers are not nn.Linear: the base layer counts once, A and B on top.
    assert shape.body_weights == TINY_BODY + TINY_LORA == 75520
    assert shape.output_weights == TINY_OUTPUT
    assert (shape.layers, shape.attention_width) == (2, 64)
    assert shape.trainable == TINY_LORA


def test_model_shape_with_frozen_weights_counts_only_the_trainable_ones():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)
    assert model_shape(model).trainable == TINY_OUTPUT


def test_forward_and_train_flops_per_token_by_hand():
    shape = ModelShape(body_weights=1000, output_weights=500, layers=3, attention_width=8, trainable=40)
    # 2 x 1000 body + 2 x 500 x 0.1 output + attention 4 x 3 layers x 8 width x 20/2 context.
    assert shape.forward_flops_per_token(context=20, logit_share=0.1) == pytest.approx(2000 + 100 + 960)
    # Only the last position's logits read: the output layer counts 1/20 of a token.
    assert shape.forward_flops_per_token(context=20, logit_share=1 / 20) == pytest.approx(2000 + 50 + 960)
    # Training: twice the forward (activation gradients) + 2 x 40 trainable weights.
    assert shape.train_flops_per_token(context=20, logit_share=0.1) == pytest.approx(2 * 3060 + 80)


def test_tiny_lora_flops_per_token_by_hand():
    shape = model_shape(get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])))
    # context 100, logits on 1 of 100 tokens: 2 x 75520 + 2 x 6400 / 100 + 4 x 2 x 64 x 50.
    forward = 151040 + 128 + 25600
    assert shape.forward_flops_per_token(100, 0.01) == pytest.approx(forward)
    assert shape.train_flops_per_token(100, 0.01) == pytest.approx(2 * forward + 2 * 1792)


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA H100 80GB HBM3", "fp16", 989.4),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H100 NVL", "bf16", 835.0),
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA L40S", "bf16", 362.1),  # not the L4's 121, whose name it contains
        ("NVIDIA L4", "bf16", 121.0),
        ("NVIDIA H100 80GB HBM3", "fp32", None),
        ("NVIDIA H100 80GB HBM3", "no", None),
        ("NVIDIA GeForce GTX 1080", "bf16", None),
        ("AMD EPYC 7763 64-Core Processor", "bf16", None),
        ("", "bf16", None),
        (None, "bf16", None),
    ],
)
def test_peak_tflops(name, precision, peak):
    assert peak_tflops(name, precision) == peak


def test_mfu_is_achieved_over_peak():
    assert mfu(494.7e12, "NVIDIA H100 80GB HBM3", "bf16") == 0.5
    assert mfu(378e12, "NVIDIA H100 PCIe", "bf16") == pytest.approx(0.5)
    assert mfu(494.7e12, "NVIDIA H100 80GB HBM3", "fp32") is None
    assert mfu(494.7e12, "AMD EPYC", "bf16") is None
    assert mfu(math.nan, "NVIDIA H100 80GB HBM3", "bf16") is None


def test_throughput_mfu_by_hand():
    shape = ModelShape(body_weights=1000, output_weights=500, layers=2, attention_width=8, trainable=50)
    speed = Throughput(seconds=2, samples=10, tokens=1000, logit_positions=10)
    # context 1000/10 = 100 tokens, logit share 10/1000: forward 2000 + 2 x 500 x 0.01 + 4 x 2 x 8 x 50.
    forward = 2000 + 10 + 3200
    train = 2 * forward + 2 * 50
    peak = 989.4e12
    h100 = {"device_name": "NVIDIA H100 80GB HBM3", "precision": "bf16"}
    assert throughput_mfu(speed, shape, training=False, **h100) == pytest.approx(forward * 1000 / 2 / peak)
    assert throughput_mfu(speed, shape, training=True, **h100) == pytest.approx(train * 1000 / 2 / peak)
    # Logits at every token: the output layer's full cost.
    every = Throughput(seconds=2, samples=10, tokens=1000, logit_positions=1000)
    assert throughput_mfu(every, shape, training=False, **h100) == pytest.approx(
        (2000 + 1000 + 3200) * 1000 / 2 / peak
    )


def test_throughput_mfu_is_none_without_time_tokens_or_a_known_peak():
    shape = ModelShape(body_weights=1000, output_weights=500, layers=2, attention_width=8, trainable=50)
    h100 = {"device_name": "NVIDIA H100 80GB HBM3", "precision": "bf16"}
    no_time = Throughput(seconds=0, samples=10, tokens=1000, logit_positions=10)
    assert throughput_mfu(no_time, shape, training=True, **h100) is None
    assert throughput_mfu(Throughput(seconds=2), shape, training=True, **h100) is None
    speed = Throughput(seconds=2, samples=10, tokens=1000, logit_positions=10)
    assert throughput_mfu(speed, shape, training=True, device_name="AMD EPYC", precision="bf16") is None
    assert (
        throughput_mfu(speed, shape, training=True, device_name="NVIDIA H100 PCIe", precision="fp32") is None
    )


def test_throughput_add_counts_one_logit_position_per_row_with_row_labels():
    speed = Throughput()
    speed.add(
        {
            "input_ids": torch.zeros(3, 8, dtype=torch.long),
            "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6]),
            "labels": torch.tensor([1, 0, 1]),
        }
    )
    assert (speed.samples, speed.tokens, speed.logit_positions) == (3, 15, 3)
    # No labels (scoring): one position per row too.
    speed.add({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)})
    assert (speed.samples, speed.tokens, speed.logit_positions) == (5, 23, 5)


def test_throughput_add_counts_labelled_tokens_with_token_labels():
    speed = Throughput()
    speed.add(
        {
            "input_ids": torch.zeros(2, 6, dtype=torch.long),
            "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
            "labels": torch.tensor([[-100, -100, -100, 5, 6, 7], [-100, -100, 8, 9, -100, -100]]),
        }
    )
    assert (speed.samples, speed.tokens, speed.logit_positions) == (2, 10, 5)


def test_memory_monitor_on_cpu_samples_each_step():
    # A large allocation before the phase: the process's peak RSS covers it, the step samples do not.
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB
    big.add_(1)
    del big
    monitor = MemoryMonitor(torch.device("cpu"))
    monitor.step()
    monitor.step()
    summary = monitor.summary()
    assert summary["kind"] == "process_peak_rss"
    assert summary["steps"] == 2 and len(monitor.allocated) == 2
    assert summary["average_gib"] > 0
    assert summary["average_gib"] == round(sum(monitor.allocated) / 2 / 2**30, 3)
    assert summary["gib"] >= summary["average_gib"]
    assert "reserved_gib" not in summary


def test_memory_monitor_without_steps_has_no_average():
    summary = MemoryMonitor(torch.device("cpu")).summary()
    assert summary["steps"] == 0 and "average_gib" not in summary and summary["gib"] > 0


def test_memory_monitor_cpu_peak_is_never_below_a_sampled_step(monkeypatch):
    # Linux's ru_maxrss lags the RSS that /proc (psutil) reports by a few hundred KiB: a step sampled at
    # the process's peak can read above it. Exaggerated here so rounding cannot hide it.
    peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    class Info:
        rss = peak_bytes + 2**30

    class Process:
        def memory_info(self):
            return Info()

    monkeypatch.setattr(record.psutil, "Process", Process)
    monitor = MemoryMonitor(torch.device("cpu"))
    monitor.step()
    monitor.step()
    summary = monitor.summary()
    assert summary["gib"] >= summary["average_gib"]
