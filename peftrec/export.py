"""Merge a saved LoRA-family head into its base model: ``python -m peftrec.export adapter=... output_dir=...``.

The result is a standalone model folder (weights, config, tokenizer) plus the head's recipe
(``peftrec_recipe.yaml``): it loads with ``transformers.AutoModelForCausalLM`` with no peft at inference,
with ``peftrec.Recommender.from_pretrained(<folder>)``, or as a run's base model (``model.name=<folder>``).

LoRA, rsLoRA, DoRA, AdaLoRA and IA3 are weight updates and merge; prefix and prompt tuning (virtual
tokens) and the bottleneck adapter (nonlinear layers) are refused with the reason.

Options (``key=value``): ``adapter`` (folder or Hub repo id, required), ``output_dir`` (required),
``precision`` (``fp32`` default: the exact merge; ``bf16`` halves the size), ``device`` (default ``cpu``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from peftrec.errors import PeftrecError

USAGE = "python -m peftrec.export adapter=<folder or owner/name> output_dir=<folder> [precision=fp32|bf16]"


def merge_adapter(
    adapter: str | Path,
    output_dir: str | Path,
    *,
    precision: str = "fp32",
    device: str | None = None,
) -> Path:
    """Fold a saved head into a fresh copy of its base model and save the result.

    Args:
        adapter: an adapter folder or Hub repo id (see :func:`peftrec.adapters.resolve_adapter`).
        output_dir: the folder to write (replaced atomically if it exists).
        precision: dtype of the merged weights: ``fp32`` (exact), ``bf16`` or ``auto``.
        device: where to merge (``cpu`` by default; a quantised base needs its GPU).

    Returns:
        The folder: the merged model, its tokenizer and ``peftrec_recipe.yaml``.

    Raises:
        PeftrecError: a head that cannot be merged (prefix/prompt tuning, bottleneck), an unusable adapter.
    """
    import torch
    from omegaconf import OmegaConf

    from peftrec.adapters import adapter_recipe, resolve_adapter
    from peftrec.assets import resolve_model
    from peftrec.atomic import swap_in
    from peftrec.methods import load_head, merge_head
    from peftrec.models import load_base_model, load_tokenizer, resolve_precision
    from peftrec.paths import RECIPE_FILE

    folder = resolve_adapter(adapter)
    recipe = adapter_recipe(folder)
    dev = torch.device(device or "cpu")
    model_path = resolve_model(recipe.model.name)
    base = load_base_model(
        model_path,
        precision=resolve_precision(precision, dev),
        attn_implementation=recipe.model.attn_implementation,
        quantization=recipe.model.get("quantization"),
        device=dev,
    )
    merged = merge_head(load_head(base, folder))
    # load_base_model turns the KV cache off (a training setting); a standalone model generates with it.
    merged.config.use_cache = True
    tokenizer = load_tokenizer(model_path, max_length=recipe.task.max_length)
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / RECIPE_FILE).write_text(OmegaConf.to_yaml(recipe))
        return swap_in(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``python -m peftrec.export adapter=... output_dir=...``."""
    from peftrec.recommend import parse_options

    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    try:
        options = parse_options(argv, {"adapter", "output_dir", "precision", "device"}, USAGE)
        for key in ("adapter", "output_dir"):
            if options.get(key) in (None, ""):
                raise PeftrecError(f"{key}= is required: {USAGE}")
        folder = merge_adapter(
            str(options["adapter"]),
            str(options["output_dir"]),
            precision=str(options.get("precision") or "fp32"),
            device=options.get("device"),
        )
    except PeftrecError as err:
        print(f"peftrec: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"Merged model: {folder}")


if __name__ == "__main__":
    main()
