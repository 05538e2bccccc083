#!/usr/bin/env bash
# The GPU suite: every head x the three tasks x three seeds on the default model, each head at every learning
# rate of its grid (the report keeps, per head, task and seed, the rate with the best validation metric:
# python -m peftrec.report, "lr chosen on validation"); zero-shot, and LoRA on Gemma-3-270M (the classical
# baselines do not depend on the device: their CPU records on the same splits are in benchmarks/results).
# Budgets: one epoch of click and rating (125 x 64; validation every 25 steps), 250 x 64
# next-item rows (validation on 200 users every 50 steps); every test row.
# Usage: bash benchmarks/suites/heads_tasks_gpu.sh [name ...] [-- override ...]
#   A name is <part>:<head>[:<seeds>], e.g. click:lora or generative:prefix:0 (seeds default 0,1,2; a comma
#   list picks some). Parts: click, rating, generative (heads lora adalora ia3 adapter prefix prompt_tuning
#   qlora); gemma:lora (click and rating on Gemma-3-270M); zero-shot:all (the three tasks). Each
#   name is one Hydra multirun (learning rates x seeds) in multirun/gpu_suite/<part>_<head>: the unit to
#   run when GPU time comes in short leases. Overrides after `--` go to every run (trainer.compile=true).
#   Without names: every part, 2-3 hours on one H100 at the eager path's speed.
# Each finished run's result.json is copied to benchmarks/results/<task>_ml100k-<protocol>_<model>_<head>
# _<steps>x64_seed<seed>[_lr<rate>]_<device>.json, so a suite stopped midway keeps what it finished.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
heads=(lora adalora ia3 adapter prefix prompt_tuning qlora)
declare -A grid=(
    [lora]=1e-4,3e-4,1e-3 [adalora]=1e-3,3e-3,1e-2 [ia3]=1e-3,3e-3,1e-2 [adapter]=1e-4,3e-4,1e-3
    [prefix]=3e-3,1e-2,3e-2 [prompt_tuning]=1e-2,3e-2,1e-1 [qlora]=1e-4,3e-4,1e-3
)
epoch=(trainer.max_steps=125 trainer.batch_size=64 trainer.eval_every=25 trainer.checkpoint_every=0)
next_item=(trainer.max_steps=250 trainer.batch_size=64 trainer.eval_every=50 trainer.checkpoint_every=0
           trainer.max_eval_examples=200)

overrides() {  # part head seeds -> the multirun's overrides, one per line
    local part=$1 head=$2 seeds=$3 args=("seed=${seeds}")
    case $part:$head in
        zero-shot:*) args+=(recipe=lora_click,lora_rating,lora_generative trainer.max_steps=0) ;;
        gemma:lora) args+=(model=gemma_3_270m recipe=lora_click,lora_rating "${epoch[@]}") ;;
        click:* | rating:* | generative:*)
            [ -n "${grid[$head]:-}" ] || { echo "unknown head ${head} (${heads[*]})" >&2; return 1; }
            args+=("recipe=lora_${part}" "peft=${head}" "trainer.optimizer.lr=${grid[$head]}")
            [ "$head" = qlora ] && args+=(model.quantization=4bit)  # QLoRA: LoRA on a 4-bit base
            if [ "$part" = generative ]; then args+=("${next_item[@]}"); else args+=("${epoch[@]}"); fi
            ;;
        *) echo "unknown part ${part}:${head} (click, rating, generative, gemma:lora, zero-shot:all)" >&2
           return 1 ;;
    esac
    printf '%s\n' "${args[@]}"
}

names=() extra=()
while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
    names+=("$1"); shift
done
if [ ${#names[@]} -eq 0 ]; then
    names=(zero-shot:all gemma:lora)
    for part in click rating generative; do
        for head in "${heads[@]}"; do names+=("${part}:${head}"); done
    done
fi

failed=()
for name in "${names[@]}"; do
    IFS=: read -r part head seeds <<<"$name"
    mapfile -t args < <(overrides "$part" "$head" "${seeds:-0,1,2}")
    [ ${#args[@]} -gt 0 ] || exit 2
    sweep="multirun/gpu_suite/${part}_${head}"
    echo "=== ${name}: python -m peftrec -m ${args[*]} ${extra[*]}"
    python -m peftrec -m "${args[@]}" "${extra[@]}" "hydra.sweep.dir=${sweep}" || failed+=("$name")
    # Every job folder holding a result (a failed run's too: the report lists it with its reason).
    for result in "${sweep}"/*/result.json; do
        [ -f "$result" ] || continue
        record=$(python - "$result" "$head" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
cfg = r["config"]
model = r["model"].removesuffix("-instruct")
steps, batch = cfg["trainer"]["max_steps"], cfg["trainer"]["batch_size"]
head = r.get("method") or sys.argv[2]
budget = f"_{steps}x{batch}" if steps else ""
lr = f"_lr{cfg['trainer']['optimizer']['lr']:.0e}".replace("e-0", "e-") if steps else ""  # _lr3e-4
device = r.get("device") or {}
name = device.get("name") or ""
device = "h100" if "H100" in name else "h200" if "H200" in name else device.get("type", "gpu")
protocol = cfg["data"]["protocol"]
print(f"{r['task']}_ml100k-{protocol}_{model}_{head}{budget}_seed{r['seed']}{lr}_{device}.json")
EOF
        ) || continue
        cp "$result" "benchmarks/results/${record}"
    done
    echo "=== ${name}: done"
done
python -m peftrec.report benchmarks/results
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
