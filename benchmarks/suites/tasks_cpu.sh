#!/usr/bin/env bash
# The three tasks on MovieLens-100K with the default model, on a CPU: the classical baselines, zero-shot
# and LoRA (the recipes' CPU budgets: 48 steps x 16; next item validated on 100 and tested on a fixed
# draw of 200 of the 943 users, because constrained beam search is slow on 2 cores). One process per run.
# Usage: bash benchmarks/suites/tasks_cpu.sh [name ...]   (default: every run below)
# Each run's result.json is copied to benchmarks/results/<task>_ml100k-<protocol>_<name>_seed0_cpu.json
set -euo pipefail
cd "$(dirname "$0")/../.."
declare -A RUNS=(
    [click_baselines]="recipe=baselines_click"
    [rating_baselines]="recipe=baselines_rating"
    [rating_baselines_random]="recipe=baselines_rating data.protocol=random data.fractions=[0.7,0.1,0.2]"
    [generative_baselines]="recipe=baselines_generative"
    [generative_baselines_all-users]="recipe=baselines_generative trainer.max_eval_examples=null trainer.max_test_examples=null"
    [rating_zero-shot]="recipe=lora_rating trainer.max_steps=0"
    [rating_lora]="recipe=lora_rating"
    [generative_zero-shot]="recipe=lora_generative trainer.max_steps=0"
    [generative_lora]="recipe=lora_generative"
    [candidates_zero-shot]="recipe=lora_generative task=generative_candidates trainer.max_steps=0"
    [candidates_lora]="recipe=lora_generative task=generative_candidates trainer.eval_every=24"
)
ORDER=(click_baselines rating_baselines rating_baselines_random generative_baselines generative_baselines_all-users
       rating_zero-shot rating_lora
       generative_zero-shot generative_lora candidates_zero-shot candidates_lora)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for name in "${names[@]}"; do
    run_dir="outputs/suites/tasks_cpu/${name}"
    # shellcheck disable=SC2086  # the overrides are words
    python -m peftrec ${RUNS[$name]} "hydra.run.dir=${run_dir}"
    protocol=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['split']['params']['protocol'])" "${run_dir}/result.json")
    cp "${run_dir}/result.json" "benchmarks/results/${name%%_*}_ml100k-${protocol}_${name#*_}_seed0_cpu.json"
done
python -m peftrec.report benchmarks/results
