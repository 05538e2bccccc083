#!/usr/bin/env bash
# The CPU-sized version of heads_tasks_gpu.sh: every head x the three tasks on the default model, a second
# model (Gemma-3-270M) with LoRA, and more seeds for the click heads, on a 2-core CPU.
#   Budget: 24 optimizer steps x 16 examples for every head and task (the click heads' seed-0 records come from
#   heads_click_cpu.sh at the same budget); each head at its click recipe's learning rate (no grid: a grid
#   triples a CPU budget that is already hours).
#   Rating: per-user leave-one-out, validation on 200 users, test on a fixed draw of 200 of the 943 users.
#   Next item: one validation on 10 users (a single validation only picks the last step), test on a fixed
#   draw of 50 users (constrained beam search costs ~3 s per user here).
# Usage: bash benchmarks/suites/heads_tasks_cpu.sh [name ...]   (default: every run, in the order below;
#        ~3 hours on 2 cores). A name is <part>:<head>:<seed>, e.g. rating:ia3:0, click:lora:1, gemma:lora:0.
# Each run's result.json is copied to benchmarks/results/<task>_ml100k-<protocol>_<model>_<head>_24x16_seed<seed>_cpu.json
# as soon as it ends, so an interrupted suite keeps what it finished; a failed run is reported and skipped.
cd "$(dirname "$0")/../.." || exit 1
heads=(lora adalora ia3 adapter prefix prompt_tuning qlora)
declare -A lr=([lora]=1e-3 [adalora]=1e-3 [ia3]=3e-3 [adapter]=1e-3 [prefix]=1e-2 [prompt_tuning]=3e-2 [qlora]=1e-3)
budget=(trainer.max_steps=24 trainer.batch_size=16 trainer.eval_every=24 trainer.checkpoint_every=0)

overrides() {  # part head seed -> the run's overrides
    local part=$1 head=$2 seed=$3
    local args=("${budget[@]}" "seed=${seed}" "peft=${head}" "trainer.optimizer.lr=${lr[$head]}")
    [ "$head" = qlora ] && args+=(model.quantization=4bit)
    case $part in
        click) args+=(recipe=lora_click) ;;
        gemma) args+=(recipe=lora_click model=gemma_3_270m) ;;
        rating) args+=(recipe=lora_rating trainer.max_eval_examples=200 trainer.max_test_examples=200) ;;
        generative) args+=(recipe=lora_generative trainer.max_eval_examples=10 trainer.max_test_examples=50) ;;
        *) echo "unknown part ${part} (click, gemma, rating, generative)" >&2; return 1 ;;
    esac
    printf '%s\n' "${args[@]}"
}

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=(gemma:lora:0)
    for head in "${heads[@]}"; do names+=("rating:${head}:0"); done
    for head in "${heads[@]}"; do names+=("generative:${head}:0"); done
    for seed in 1 2; do for head in "${heads[@]}"; do names+=("click:${head}:${seed}"); done; done
fi

failed=()
for name in "${names[@]}"; do
    IFS=: read -r part head seed <<<"$name"
    mapfile -t args < <(overrides "$part" "$head" "$seed")
    [ ${#args[@]} -gt 0 ] || exit 2
    run_dir="outputs/suites/heads_tasks_cpu/${part}_${head}_seed${seed}"
    echo "=== ${name}: python -m peftrec ${args[*]}"
    if python -m peftrec "${args[@]}" "hydra.run.dir=${run_dir}"; then
        # <task>_ml100k-<protocol>_<model>_<head>_24x16_seed<seed>_cpu.json, named from the record itself
        record=$(python - "${run_dir}/result.json" "$head" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
model = r["model"].removesuffix("-instruct")
print(f"{r['task']}_ml100k-{r['split']['params']['protocol']}_{model}_{sys.argv[2]}_{r['steps']}x16_seed{r['seed']}_cpu.json")
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
