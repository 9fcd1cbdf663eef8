#!/usr/bin/env bash
# One call does every GPU check (run it on a lent H100/H200 with the `device` tool):
#   1. the CUDA path of the trainer: a 2-epoch smoke trial on device=cuda with bf16 autocast;
#   2. training-step throughput per backbone: fp32 vs bf16 autocast, channels_last, torch.compile;
#   3. fractional-GPU sweep: 4 CNN trials sharing one GPU through Ray Tune (0.25 GPU each).
# Results land in $OUT (or bench/results/) as JSON and a log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -m pip install -q -e . 2>&1 | tail -2 || true

"$PY" - <<'PY' 2>&1 | tee "$OUT/gpu_check.log"
import json, os, statistics, tempfile, time
from pathlib import Path
import torch
from torch.utils.flop_counter import FlopCounterMode
from galaxy_da.config import ModelConfig, load_config
from galaxy_da.losses.focal import FocalLoss
from galaxy_da.models.registry import build_model

out = Path(os.environ.get("OUT", "bench/results"))
assert torch.cuda.is_available(), "no GPU visible"
device = torch.device("cuda")
results = {"device": torch.cuda.get_device_name(0), "rows": []}

def peak(dtype):
    a = torch.randn(8192, 8192, device=device, dtype=dtype); b = torch.randn_like(a)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(20): a @ b
    torch.cuda.synchronize(); return 2 * 8192**3 * 20 / (time.perf_counter() - t)
results["peak_tf32_off_fp32"] = peak(torch.float32)
results["peak_bf16"] = peak(torch.bfloat16)

def step_time(cfg, size, bf16, channels_last, compile_model, batch=256, steps=30):
    torch.manual_seed(0)
    model = build_model(cfg, 3, 3, size).to(device)
    x = torch.randn(batch, 3, size, size, device=device); y = torch.randint(0, 3, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), 1e-3); loss_fn = FocalLoss(2.0)
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = fwd(x)
        loss = loss_fn(logits.float(), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(5): step()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / steps
    with FlopCounterMode(display=False) as counter:
        logits, _ = model(x); loss_fn(logits.float(), y).backward()
    return {"images_per_s": batch / dt, "flop_per_s": counter.get_total_flops() / dt}

for name, cfg, size in [("cnn", ModelConfig(backbone="cnn"), 64), ("resnet18", ModelConfig(backbone="resnet18"), 64),
                        ("steerable-C8", ModelConfig(backbone="steerable", group="C8", width=8), 65)]:
    for bf16 in (False, True):
        for cl in (False, True):
            for comp in ((False, True) if name != "steerable-C8" else (False,)):
                try:
                    row = {"backbone": name, "bf16": bf16, "channels_last": cl, "compile": comp, **step_time(cfg, size, bf16, cl, comp)}
                    row["share_of_bf16_peak" if bf16 else "share_of_fp32_peak"] = row["flop_per_s"] / (results["peak_bf16"] if bf16 else results["peak_tf32_off_fp32"])
                except Exception as exc:  # report, keep going
                    row = {"backbone": name, "bf16": bf16, "channels_last": cl, "compile": comp, "error": repr(exc)[:300]}
                print(row, flush=True); results["rows"].append(row)
(out / "gpu_train_step.json").write_text(json.dumps(results, indent=2))
PY

# the trainer's own CUDA path, end to end, on a tiny synthetic dataset
DATA=$(mktemp -d)/synth
"$PY" -m galaxy_da.cli synth --out "$DATA" --n-source 300 --n-target 240 --size 33 --workers 8 >/dev/null
"$PY" -m galaxy_da.cli train --config configs/smoke.yaml data.path="$DATA" device=cuda --no-track 2>&1 | tee "$OUT/gpu_trial.log"
if [ -f sweeps/topk.py ]; then
  "$PY" sweeps/topk.py --smoke-test --data "$DATA" --tracking-uri "sqlite:///$(mktemp -d)/mlflow.db" 2>&1 | tail -40 | tee "$OUT/gpu_sweep.log"
fi
echo "gpu_check done"
