#!/usr/bin/env bash
# Every GPU check in one call of about 5 minutes, for a lent GPU (the `device` tool):
#
#   run(command="OUT=$OUT bash bench/gpu_check.sh", timeout_s=560)
#
#   1. the tests marked `gpu` (no host sync inside an epoch, bf16 + channels_last trial, device batches, solver);
#   2. a bf16 trial through `galaxy-da train` (device=cuda, compute.precision=bf16);
#   3. a sweep packing 4 CNN trials on one GPU, against 1 alone (bench/gpu_packing.py);
#   4. a 2-GPU DDP trial (NCCL, Ray Train) when 2 GPUs are present;
#   5. bench/train_step.py on the device: img/s per backbone, share of the bf16 peak measured in the same run.
#
# Each step has its own time limit and a failure does not stop the others; everything lands in
# $OUT (default bench/results/gpu): one JSON per step and gpu_check.json, which BENCHMARKS.md cites.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu}"
PY="${PY:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 2
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || true  # offline: the code only
WORK=$(mktemp -d)
STATUS="$OUT/steps.jsonl"
: >"$STATUS"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log, record the exit code
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local code=$?
  printf '{"step": "%s", "exit_code": %d, "seconds": %d}\n' "$name" "$code" $((SECONDS - start)) | tee -a "$STATUS"
}

"$PY" -m galaxy_da.cli synth --out "$WORK/synth" --n-source 400 --n-target 320 --size 33 --workers 8 >/dev/null
step pytest_gpu 75 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml"
step bf16_trial 45 "$PY" -m galaxy_da.cli train --config configs/smoke.yaml "data.path=$WORK/synth" device=cuda compute.precision=bf16 --no-track
step packing 120 "$PY" bench/gpu_packing.py --data "$WORK/synth" --json "$OUT/gpu_packing.json"
if [ "$GPUS" -ge 2 ]; then
  step ddp_2gpu 75 "$PY" sweeps/topk.py --smoke-test --data "$WORK/synth" --num-samples 1 --use-gpu --name ddp2 \
    --storage-path "$WORK/ray" --tracking-uri "sqlite:///$WORK/mlflow.db" resources.workers_per_trial=2
else
  printf '{"step": "ddp_2gpu", "skipped": "%s GPU(s)"}\n' "$GPUS" | tee -a "$STATUS"
fi
step train_step 90 "$PY" bench/train_step.py --device cuda --batch 256 --steps 20 --json "$OUT/train_step_cuda.json"

"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
read = lambda name: json.loads((out / name).read_text()) if (out / name).is_file() else None
summary = {"gpu": (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").is_file() else None,
           "steps": [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()],
           "train_step": read("train_step_cuda.json"), "packing": read("gpu_packing.json")}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({"steps": summary["steps"], "packed_over_single": (summary["packing"] or {}).get("packed_over_single")}))
PY
echo "gpu_check done: $OUT/gpu_check.json"
