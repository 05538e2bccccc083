#!/usr/bin/env bash
# The CPU-sized version of heads_tasks_gpu.sh: every head x the three tasks x three seeds on the default model,
# and LoRA on a second model (Gemma-3-270M), on a 2-core CPU.
#   Budget: 24 optimizer steps x 16 examples for every head and task; each head at its click recipe's learning
#   rate (no grid: a grid would triple a budget that is already hours).
#   Click: TALLRec split, validation on the fixed 200-row subset, the whole 1000-row test set (34 users).
#   Rating: per-user leave-one-out, validation on 200 users, test on a fixed draw of 200 of the 943 users.
#   Next item: one validation on 10 users (a single validation only picks the last step), test on a fixed
#   draw of 50 users (constrained beam search costs ~3 s per user here).
# Usage: bash benchmarks/suites/heads_tasks_cpu.sh [name ...]
#   A name is <part>:<head>:<seed> with part click, rating, generative, or gemma, gemma_rating, gemma_generative
#   (the same task on Gemma-3-270M; gemma alone is click),
#   e.g. rating:ia3:0 or click:lora:1; head zero-shot tests the untrained model on the same rows. A fourth
#   field sets another learning rate (click:adalora:0:1e-2; the record's name then ends in _lr1e-2).
#   Without names: every run, seed 0 of everything first (about 8 hours on 2 cores: click ~6 min,
#   rating ~5 min, next item ~7 min, QLoRA ~1.7x longer; Gemma: rating ~4 min, next item ~26 min).
# Each run's result.json is copied to benchmarks/results/<task>_ml100k-<protocol>_<model>_<head>[_24x16]_seed<seed>_cpu.json
# as soon as it ends, so an interrupted suite keeps what it finished; a failed run is reported and skipped.
cd "$(dirname "$0")/../.." || exit 1
heads=(lora adalora ia3 adapter prefix prompt_tuning qlora)
declare -A lr=([lora]=1e-3 [adalora]=1e-3 [ia3]=3e-3 [adapter]=1e-3 [prefix]=1e-2 [prompt_tuning]=3e-2 [qlora]=1e-3)

overrides() {  # part head seed [lr] -> the run's overrides
    local part=$1 head=$2 seed=$3 rate=${4:-${lr[$2]:-}}
    local steps=24
    [ "$head" = zero-shot ] && steps=0  # the base model with the same prompts and test rows
    local args=("trainer.max_steps=${steps}" trainer.batch_size=16 trainer.eval_every=24 trainer.checkpoint_every=0
                "seed=${seed}")
    case $head in
        zero-shot) ;;
        qlora) args+=("peft=${head}" "trainer.optimizer.lr=${rate}" model.quantization=4bit) ;;
        *) args+=("peft=${head}" "trainer.optimizer.lr=${rate}") ;;
    esac
    local task=$part model=()
    case $part in
        gemma) task=click model=(model=gemma_3_270m) ;;
        gemma_*) task=${part#gemma_} model=(model=gemma_3_270m) ;;
    esac
    case $task in
        click) args+=(recipe=lora_click) ;;
        rating) args+=(recipe=lora_rating trainer.max_eval_examples=200 trainer.max_test_examples=200) ;;
        generative) args+=(recipe=lora_generative trainer.max_eval_examples=10 trainer.max_test_examples=50) ;;
        *) echo "unknown part ${part} (click, rating, generative, gemma, gemma_rating, gemma_generative)" >&2; return 1 ;;
    esac
    printf '%s\n' "${args[@]}" "${model[@]}"
}

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=(rating:zero-shot:0 generative:zero-shot:0)  # click's zero-shot has no test-row draw: tasks_cpu.sh
    for seed in 0 1 2; do
        for part in gemma gemma_rating gemma_generative; do names+=("${part}:lora:${seed}"); done
        for part in click rating generative; do
            for head in "${heads[@]}"; do names+=("${part}:${head}:${seed}"); done
        done
    done
fi

failed=()
for name in "${names[@]}"; do
    IFS=: read -r part head seed rate <<<"$name"
    mapfile -t args < <(overrides "$part" "$head" "$seed" "$rate")
    [ ${#args[@]} -gt 0 ] || exit 2
    run_dir="outputs/suites/heads_tasks_cpu/${part}_${head}_seed${seed}${rate:+_lr${rate}}"
    echo "=== ${name}: python -m peftrec ${args[*]}"
    if python -m peftrec "${args[@]}" "hydra.run.dir=${run_dir}"; then
        # <task>_ml100k-<protocol>_<model>_<head>_24x16_seed<seed>_cpu.json, named from the record itself
        record=$(python - "${run_dir}/result.json" "$head" "${rate:+_lr${rate}}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
model = r["model"].removesuffix("-instruct")
budget = f"_{r['steps']}x16" if r["steps"] else ""
print(f"{r['task']}_ml100k-{r['split']['params']['protocol']}_{model}_{sys.argv[2]}{budget}_seed{r['seed']}{sys.argv[3]}_cpu.json")
EOF
        )
        cp "${run_dir}/result.json" "benchmarks/results/${record}"
        echo "=== ${name}: benchmarks/results/${record}"
    else
        failed+=("$name")
        echo "=== ${name}: FAILED (see ${run_dir})"
    fi
done
python -m peftrec.report benchmarks/results
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
