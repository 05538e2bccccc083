"""``sdpa`` loads as an attention whose mask is built without the host reading the batch.

transformers' own SDPA mask reads the attention mask on the host in every forward pass to decide whether it
may drop the mask; on a GPU that read makes the host wait for the device. peftrec's registered variant must
give the same outputs (padded or not, with a KV cache in beam search) without those reads.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from peftrec.attention import SDPA_WITHOUT_HOST_READS
from peftrec.host_reads import mark, recording_host_reads
from peftrec.models import load_base_model


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """(peftrec's load of ``sdpa``, transformers' plain ``sdpa``), the same weights in fp32."""
    ours = load_base_model(tiny_model_dir, precision="fp32", attn_implementation="sdpa")
    plain = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32
    )
    return ours, plain.eval()


def batch(padded: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 300, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :4] = 0  # left padding, as generation batches have
        mask[2, :1] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_sdpa_loads_as_the_registered_variant_and_other_names_as_they_are(models, tiny_model_dir):
    ours, _ = models
    assert ours.config._attn_implementation == SDPA_WITHOUT_HOST_READS
    eager = load_base_model(tiny_model_dir, precision="fp32", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"


@pytest.mark.parametrize("padded", [True, False])
def test_forward_matches_transformers_sdpa_without_reading_the_mask(models, padded):
    ours, plain = models
    inputs = batch(padded)
    with torch.no_grad(), recording_host_reads() as log:
        ours_logits = ours(**mark(inputs)).logits
    assert log.reads == []
    with torch.no_grad(), recording_host_reads() as log:
        plain_logits = plain(**mark(inputs)).logits
    # The reads this variant avoids: transformers asks whether the batch is padded.
    assert {site.split(":")[0] for _, _, site in log.reads} == {"transformers/masking_utils.py"}
    torch.testing.assert_close(ours_logits.as_subclass(torch.Tensor), plain_logits.as_subclass(torch.Tensor))


def test_forward_without_a_mask_keeps_transformers_shortcut(models):
    ours, plain = models
    ids = batch(padded=False)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_beam_search_with_a_kv_cache_generates_the_same_tokens(models):
    ours, plain = models
    inputs = batch(padded=True)
    settings = {"max_new_tokens": 6, "num_beams": 3, "do_sample": False, "use_cache": True}
    with torch.no_grad():
        assert torch.equal(ours.generate(**inputs, **settings), plain.generate(**inputs, **settings))
