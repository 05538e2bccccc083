#!/usr/bin/env bash
# Every PEFT head on the click task with the same budget, on a CPU:
#   SmolLM2-135M-Instruct, MovieLens-100K TALLRec split, 24 optimizer steps x 16 examples, the best of one
#   validation (the fixed 200-example subset), the whole 1000-example test set. Each head keeps its
#   recipe's learning rate (prompt and prefix heads need larger ones). One process per head.
# Usage: bash benchmarks/suites/heads_click_cpu.sh [recipe ...]   (default: every *_click recipe)
# Each run's result.json is copied to benchmarks/results/ as click_ml100k-tallrec_smollm2-135m_<recipe>_24x16_seed0_cpu.json
set -euo pipefail
cd "$(dirname "$0")/../.."
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=(lora_click adalora_click prefix_click ia3_click prompt_tuning_click adapter_click qlora_click)
for recipe in "${recipes[@]}"; do
    run_dir="outputs/suites/heads_click_cpu/${recipe}"
    python -m peftrec "recipe=${recipe}" trainer.max_steps=24 trainer.eval_every=24 "hydra.run.dir=${run_dir}"
    cp "${run_dir}/result.json" "benchmarks/results/click_ml100k-tallrec_smollm2-135m_${recipe%_click}_24x16_seed0_cpu.json"
done
python -m peftrec.report benchmarks/results
