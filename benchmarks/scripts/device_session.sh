#!/usr/bin/env bash
# peftrec's GPU benchmarks on a machine lent by the device tool, in one lease: two calls, about 12 of the
# 15 minutes of device time (a start of 1-2 minutes, the first chunk, then everything below in one call).
#
# Here first: python benchmarks/scripts/device_payload.py   (writes .xfer/ and prints the call plan), then:
#   call 1, carry [.xfer/manifest.json, .xfer/c0]:  bash benchmarks/scripts/device_session.sh stage
#   call 2, carry [.xfer/manifest.json, .xfer/c1]:  bash benchmarks/scripts/device_session.sh stage run click generative constraint graphs
# A later call on the same warm machine skips what is done (chunks, unpacking, install, the model's
# conversion): `run generative` alone reruns one step.
#
# Steps, in order of priority (issue 5's targets first), each under its own time limit inside
# DEVICE_BUDGET_S (default 560 of the call's 600 s); a step that would start with under 30 s left is skipped:
#   click       fast paths for LoRA click: the baseline, fast, cuda_graphs and checkpointing_every_4 at batch
#               64, then cuda_graphs, fast and compile at batch 256; one forward pass against generation, on the
#               first of cuda_graphs / fast_large_batch that trains (training x baseline, samples/s, memory,
#               scoring x)
#   generative  fast paths for LoRA next item: the baseline and fast; batched constrained beam search
#               against one user at a time (users/s, MFU)
#   constraint  the catalog mask's time per decoding step (benchmarks/scripts/constraint_time.py)
#   graphs      graphs Dynamo traces by region for 12 batch lengths (benchmarks/scripts/compile_graphs.py)
# Each step's log goes to $OUT/<step>.log, and a fast-paths step's record to $OUT/<step>.json as it ends;
# fast-paths records are written after every variant, so a step stopped by its limit returns what it
# finished ("complete": false, the rest "pending"). $OUT/setup.log has the machine, the install and the
# model's conversion. Rehearse on a CPU: DEVICE_OVERRIDES='fastpaths.train_steps=2 ...' DEVICE_STEP_LIMIT_S=900
# DEVICE_BUDGET_S=3600 (see benchmarks/README.md).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

XFER=${DEVICE_XFER:-/tmp/xfer}  # the chunks and the unpacked payload there; /tmp lasts while the machine is warm
SITE=${DEVICE_SITE:-/tmp/site}  # the payload's packages; DEVICE_SITE=none uses the environment's own
OUT=${OUT:-/tmp/device-out}
BUDGET=${DEVICE_BUDGET_S:-560}
read -r -a EXTRA <<<"${DEVICE_OVERRIDES:-}"  # Hydra overrides for both fast-paths steps
export PEFTREC_CACHE=${PEFTREC_CACHE:-/tmp/peftrec-cache}
export PEFTREC_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # peftrec from this tree, for the scripts too
mkdir -p "$OUT" "$XFER"

say() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/setup.log"; }

stage() {  # copy the carried chunks to where they outlast this call
    [ -f .xfer/manifest.json ] || { say "no .xfer/manifest.json carried"; return 1; }
    cp .xfer/manifest.json "$XFER/"
    for chunk in .xfer/c*; do [ -f "$chunk" ] && cp "$chunk" "$XFER/" && say "staged ${chunk#.xfer/}"; done
    return 0
}

setup() {  # unpack and install the payload, convert the model once
    if [ ! -f "$XFER/.installed" ]; then
        { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
          python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.version.cuda)"
        } 2>&1 | tee -a "$OUT/setup.log"
        python3 benchmarks/scripts/device_payload.py assemble --chunks "$XFER" --to "$XFER/payload" \
            2>&1 | tee -a "$OUT/setup.log" || return 1
        if [ "$SITE" != none ]; then
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
                "$XFER"/payload/python/*.whl 2>&1 | tee -a "$OUT/setup.log" || return 1
        fi
        mkdir -p "$PEFTREC_CACHE/wheels"
        cp "$XFER"/payload/cache/wheels/*.whl "$PEFTREC_CACHE/wheels/"
        touch "$XFER/.installed"
        say "payload installed"
    fi
    [ "$SITE" != none ] && export PYTHONPATH="$SITE:$PYTHONPATH"
    python3 - <<'EOF' 2>&1 | tee -a "$OUT/setup.log"
import json, os, pathlib
from peftrec.assets import resolve_dataset, resolve_model
from peftrec.record import package_versions
manifest = json.loads(pathlib.Path(os.environ["XFER_MANIFEST"]).read_text())
for name in manifest["datasets"]:
    resolve_dataset(name)
for name in manifest["models"]:
    print(name, "->", resolve_model(name))
print(package_versions())
EOF
    [ "${PIPESTATUS[0]}" -eq 0 ] && say "assets ready"
}

step() {  # name cap_seconds command...: run under the smaller of the cap and the budget left
    local name=$1 cap=$2 left limit rc
    shift 2
    cap=${DEVICE_STEP_LIMIT_S:-$cap}  # one limit for every step (a rehearsal on a slow CPU)
    left=$((BUDGET - SECONDS - 10))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 30 ]; then say "skipped $name: ${left}s of the budget left"; return 0; fi
    say "$name: up to ${limit}s: $*"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc$([ $rc -eq 124 ] && echo ' (its time limit)')"
}

fastpaths() {  # name cap overrides...: a fast-paths run whose record goes to $OUT/<name>.json
    local name=$1 cap=$2
    shift 2
    rm -rf "$XFER/runs/$name"
    step "$name" "$cap" python3 -m peftrec.fastpaths "$@" "hydra.run.dir=$XFER/runs/$name" "${EXTRA[@]}"
    if [ -f "$XFER/runs/$name/fastpaths.json" ]; then cp "$XFER/runs/$name/fastpaths.json" "$OUT/$name.json"; fi
}

run_step() {
    case $1 in
        click) fastpaths click 330 recipe=lora_click "fastpaths.variants=[baseline,fast,cuda_graphs,checkpointing_every_4]" \
            fastpaths.large_batch_size=256 "fastpaths.large_batch_variants=[cuda_graphs,fast,compile]" \
            "fastpaths.evaluation_variant=[cuda_graphs,fast_large_batch]" ;;
        generative) fastpaths generative 200 recipe=lora_generative "fastpaths.variants=[baseline,fast]" \
            fastpaths.train_steps=40 fastpaths.beam_search_users=32 trainer.eval_batch_size=32 ;;
        constraint) step constraint 90 python3 benchmarks/scripts/constraint_time.py ;;
        graphs) step graphs 60 python3 benchmarks/scripts/compile_graphs.py ;;
        *) say "unknown step $1 (click, generative, constraint, graphs)"; return 1 ;;
    esac
}

export XFER_MANIFEST="$XFER/manifest.json"
mode=
for arg in "$@"; do
    case $arg in
        stage) stage || exit 1 ;;
        run) mode=run; setup || { say "setup failed: see setup.log"; exit 1; } ;;
        *) [ "$mode" = run ] || { echo "usage: $0 [stage] [run STEP ...]" >&2; exit 2; }
           run_step "$arg" ;;
    esac
done
say "done"
