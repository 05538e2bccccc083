"""Model FLOPs of a training or scoring step, and model FLOPs utilisation (MFU) on a known GPU.

MFU here is *model* FLOPs (what the work needs, counted from the architecture over real, non-pad
tokens) per second over the accelerator's dense bf16/fp16 peak. Padding, recomputation (gradient
checkpointing) and logits the task never reads do not count: a path that computes them wastes FLOPs
and shows a lower MFU, which is the point of measuring it.

Counting (after the PaLM paper's appendix B, adapted to a frozen base):

- forward, per token: 2 x (matmul weights the token passes through) + attention 4 x layers x
  attention width x context/2 (scores and weighted values over the causal context);
  the output layer (vocabulary projection) counts only for the positions whose logits are used;
- training adds a backward pass: the activation gradients cost one forward again; weight gradients
  (another forward's worth in full fine-tuning, hence the familiar 6N) are needed only for the
  trainable head's weights, counted as 2 x trainable weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS_BF16 = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,  # the SXM part's name as CUDA reports it
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.2,
}


def peak_tflops(device_name: str | None, precision: str) -> float | None:
    """The bf16/fp16 dense peak of a GPU by its CUDA name, or None (CPU, fp32, or an unknown GPU)."""
    if not device_name or precision not in ("bf16", "fp16"):
        return None
    # Longest key first: "H100 80GB HBM3" before "H100".
    for key in sorted(PEAK_TFLOPS_BF16, key=len, reverse=True):
        if key in device_name:
            return PEAK_TFLOPS_BF16[key]
    return None


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs to know of a causal LM.

    Attributes:
        body_weights: matmul weights a token passes through below the output layer (attention and MLP
            projections; embeddings are lookups and cost nothing).
        output_weights: the vocabulary projection's weights (hidden x vocab).
        layers: transformer blocks.
        attention_width: heads x head dimension (the width of the query and value projections).
        trainable: trainable weights (the head), whose gradients training computes.
    """

    body_weights: int
    output_weights: int
    layers: int
    attention_width: int
    trainable: int

    def forward_flops_per_token(self, context: float, logit_share: float) -> float:
        """Forward FLOPs of one token with ``context`` tokens in its sequence on average.

        Args:
            context: mean sequence length (a token attends to about half of it, causally).
            logit_share: the share of tokens whose vocabulary logits are computed and used
                (1/length when only the last position is read).
        """
        attention = 4 * self.layers * self.attention_width * context / 2
        return 2 * self.body_weights + 2 * self.output_weights * logit_share + attention

    def train_flops_per_token(self, context: float, logit_share: float) -> float:
        """Forward plus backward: activation gradients (one forward again) and the head's weight gradients."""
        return 2 * self.forward_flops_per_token(context, logit_share) + 2 * self.trainable


def model_shape(model: torch.nn.Module) -> ModelShape:
    """Count a (possibly peft-wrapped, possibly 4-bit) causal LM's matmul weights from its modules.

    Sizes come from ``in_features``/``out_features`` of every ``nn.Linear`` (bitsandbytes' 4-bit layers
    subclass it and pack their weights, so ``weight.numel()`` would undercount); peft's wrappers are not
    ``nn.Linear`` themselves, so a wrapped layer counts once, through its base layer. The head's own
    small layers (LoRA's A and B, the Adapter's projections) count in ``body_weights`` too, as they are
    computed for every token.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    output = inner.get_output_embeddings()
    body = 0
    for module in inner.modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            body += module.in_features * module.out_features
    config = inner.config
    text = getattr(config, "text_config", None) or config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelShape(
        body_weights=body,
        output_weights=int(output.in_features) * int(output.out_features) if output is not None else 0,
        layers=int(text.num_hidden_layers),
        attention_width=int(text.num_attention_heads) * int(head_dim),
        trainable=int(trainable),
    )


def mfu(flops_per_second: float, device_name: str | None, precision: str) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak (None where unknown)."""
    peak = peak_tflops(device_name, precision)
    if peak is None or flops_per_second != flops_per_second:  # NaN
        return None
    return flops_per_second / (peak * 1e12)


def throughput_mfu(
    throughput, shape: ModelShape, *, training: bool, device_name: str | None, precision: str
) -> float | None:
    """MFU of a measured phase (a :class:`peftrec.train.Throughput`: seconds, samples, real tokens and
    the positions whose logits were read), or None where the device's peak is unknown."""
    if throughput.seconds <= 0 or throughput.tokens == 0:
        return None
    context = throughput.tokens / max(throughput.samples, 1)
    logit_share = throughput.logit_positions / throughput.tokens
    per_token = (
        shape.train_flops_per_token(context, logit_share)
        if training
        else shape.forward_flops_per_token(context, logit_share)
    )
    return mfu(per_token * throughput.tokens / throughput.seconds, device_name, precision)
