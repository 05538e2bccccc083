#!/usr/bin/env bash
# The GPU suite: every head x the three tasks x three seeds on the default model, each head at every
# learning rate of its grid; the report keeps, per head, task and seed, the rate with the best validation
# metric (python -m peftrec.report: "lr chosen on validation"). Then zero-shot, the classical baselines,
# and LoRA on Gemma-3-270M. One Hydra multirun per head (its grid differs); the sweeps land in
# multirun/gpu_suite/<head>/<job>/result.json, which the report reads as they are.
# Budgets: one epoch of click/rating (125 x 64), 250 x 64 next-item rows, every test row.
# Usage: bash benchmarks/suites/heads_tasks_gpu.sh            (about 2-3 GPU hours on one H100, not yet run)
set -euo pipefail
cd "$(dirname "$0")/../.."
common=(trainer.max_steps=125 trainer.batch_size=64 trainer.eval_every=25 trainer.checkpoint_every=0 seed=0,1,2)
declare -A grid=(
    [lora]=1e-4,3e-4,1e-3 [adalora]=1e-3,3e-3,1e-2 [ia3]=1e-3,3e-3,1e-2 [adapter]=1e-4,3e-4,1e-3
    [prefix]=3e-3,1e-2,3e-2 [prompt_tuning]=1e-2,3e-2,1e-1 [qlora]=1e-4,3e-4,1e-3
)
# The task recipes (lora_<task>) choose task, data and split; `peft=` swaps the head (QLoRA also stores the
# base in 4 bits).
for head in lora adalora ia3 adapter prefix prompt_tuning qlora; do
    peft=("peft=${head}")
    [ "$head" = qlora ] && peft+=(model.quantization=4bit)
    python -m peftrec -m recipe=lora_click,lora_rating "${peft[@]}" "${common[@]}" \
        "trainer.optimizer.lr=${grid[$head]}" "hydra.sweep.dir=multirun/gpu_suite/${head}"
    python -m peftrec -m recipe=lora_generative "${peft[@]}" "${common[@]}" trainer.max_steps=250 trainer.eval_every=50 \
        trainer.max_eval_examples=200 "trainer.optimizer.lr=${grid[$head]}" "hydra.sweep.dir=multirun/gpu_suite/${head}_generative"
done
python -m peftrec -m recipe=lora_click,lora_rating,lora_generative trainer.max_steps=0 "hydra.sweep.dir=multirun/gpu_suite/zero_shot"
python -m peftrec -m recipe=baselines_click,baselines_rating,baselines_generative "hydra.sweep.dir=multirun/gpu_suite/baselines"
python -m peftrec -m model=gemma_3_270m recipe=lora_click,lora_rating,lora_generative "${common[@]}" \
    "hydra.sweep.dir=multirun/gpu_suite/gemma_lora"
python -m peftrec.report multirun/gpu_suite --out benchmarks/report_gpu
