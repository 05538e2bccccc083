#!/usr/bin/env bash
# One process against two data-parallel processes (torchrun, gloo) on the same CPU and the same run:
#   SmolLM2-135M-Instruct + LoRA r8 on q,v, MovieLens-100K TALLRec split, 24 optimizer steps x 16 examples
#   (each of two processes takes 8 of every 16), validation on the fixed 200-example subset, the whole
#   1000-example test set. Once with the recipe's LoRA dropout (0.05), once without: without dropout the two
#   runs compute the same thing and must agree up to float summation order.
# Usage: bash benchmarks/suites/processes_click_cpu.sh
# Records: benchmarks/results/processes/click_ml100k-tallrec_smollm2-135m_lora_24x16_seed0_cpu-{1,2}proc[-nodropout].json
set -euo pipefail
cd "$(dirname "$0")/../.."
cores=$(nproc)
for dropout in 0.05 0; do
    suffix=$([ "$dropout" = 0 ] && echo "-nodropout" || echo "")
    one="outputs/suites/processes_click_cpu/1proc${suffix}"
    two="outputs/suites/processes_click_cpu/2proc${suffix}"
    python -m peftrec recipe=lora_click trainer.max_steps=24 trainer.eval_every=24 \
        "peft.lora_dropout=${dropout}" "hydra.run.dir=${one}"
    # Two processes share the cores: one thread each on a 2-core machine.
    OMP_NUM_THREADS=$(( cores / 2 > 0 ? cores / 2 : 1 )) ACCELERATE_USE_CPU=1 \
        torchrun --standalone --nproc_per_node 2 -m peftrec recipe=lora_click trainer.max_steps=24 \
        trainer.eval_every=24 "peft.lora_dropout=${dropout}" "hydra.run.dir=${two}"
    cp "${one}/result.json" "benchmarks/results/processes/click_ml100k-tallrec_smollm2-135m_lora_24x16_seed0_cpu-1proc${suffix}.json"
    cp "${two}/result.json" "benchmarks/results/processes/click_ml100k-tallrec_smollm2-135m_lora_24x16_seed0_cpu-2proc${suffix}.json"
done
python -m peftrec.report benchmarks/results/processes
