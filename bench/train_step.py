"""Training-step throughput per backbone, and its share of the device's matmul peak measured in the same run.

For each backbone one full training step (forward under the trial's autocast,
focal loss, backward, AdamW) runs on a batch of random 3-band stamps, in the
memory layout ``compute.channels_last`` would pick and, with ``--compile``,
through ``torch.compile``. The FLOPs of forward + backward are counted with
``torch.utils.flop_counter.FlopCounterMode`` and divided by the step time; the
peak of each precision is the best of several large matmuls in that dtype (fp32
with TF32 off, bf16), before and after the backbones.

- CPU: per-step median (``--steps`` steps), fp32; the figures of BENCHMARKS.md.
- CUDA: ``--steps`` steps timed together between two synchronisations (a
  per-step sync would measure the host); fp32 and bf16 autocast.

Run: ``python bench/train_step.py [--device cpu|cuda] [--threads 2] [--batch 64] [--steps 10] [--json PATH]``
(steerable nets use 65 px: they are exactly invariant only on odd sizes.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from galaxy_da.accel import autocast, forward_of, memory_format
from galaxy_da.config import ModelConfig
from galaxy_da.losses.focal import FocalLoss
from galaxy_da.models.registry import build_model

BACKBONES = {
    "cnn": (ModelConfig(backbone="cnn"), 64),
    "resnet18": (ModelConfig(backbone="resnet18"), 64),
    "steerable-C8 (w8)": (ModelConfig(backbone="steerable", group="C8", width=8), 65),
    "steerable-D4 (w8)": (ModelConfig(backbone="steerable", group="D4", width=8), 65),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str) -> float:
    """Best observed FLOP/s of an n x n matmul in ``precision`` (TF32 off for fp32): 2 n^3 / t."""
    n, repeats = (8192, 20) if device.type == "cuda" else (2048, 10)
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    b = torch.randn_like(a)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def measure(name: str, cfg: ModelConfig, size: int, batch: int, steps: int, device: torch.device, precision: str,
            channels_last: bool | None, compile_backend: str) -> dict:
    torch.manual_seed(0)
    layout = memory_format(cfg.backbone, channels_last)
    model = build_model(cfg, 3, 3, size).to(device).to(memory_format=layout)
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=layout)
    labels = torch.randint(0, 3, (batch,), device=device)
    forward, loss_fn = forward_of(model, compile_backend), FocalLoss(gamma=2.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with autocast(device, precision):
            logits, _ = forward(images)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter, autocast(device, precision):
        logits, _ = model(images)
        loss_fn(logits.float(), labels).backward()
    flops = counter.get_total_flops()
    for _ in range(3):  # warm-up (and compilation)
        step()
    if device.type == "cuda":
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        step_s = (time.perf_counter() - start) / steps
    else:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        step_s = statistics.median(times)
    return {"backbone": name, "image_size": size, "batch": batch, "precision": precision, "channels_last": layout == torch.channels_last,
            "compile": compile_backend, "step_s": step_s, "images_per_s": batch / step_s, "gflop_per_step": flops / 1e9,
            "flop_per_s": flops / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--precisions", nargs="+", choices=list(DTYPES), help="default: fp32 on CPU, fp32 and bf16 on CUDA")
    parser.add_argument("--compile", default="off", choices=["off", "inductor", "aot_eager"])
    parser.add_argument("--json", type=Path, default=Path("bench/results/train_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    peaks = {p: [matmul_peak(device, p)] for p in precisions}
    rows = []
    for name in args.backbones:
        cfg, size = BACKBONES[name]
        for precision in precisions:
            for channels_last in (False, True):
                row = measure(name, cfg, size, args.batch, args.steps, device, precision, channels_last, args.compile)
                row["share_of_peak"] = row["flop_per_s"] / peaks[precision][0]
                rows.append(row)
                print(f"{name:<20} {precision} cl={channels_last!s:<5} {row['images_per_s']:9.1f} img/s  "
                      f"{row['flop_per_s'] / 1e9:8.1f} GFLOP/s  {row['share_of_peak']:.1%} of the {precision} peak", flush=True)
    for precision in precisions:
        peaks[precision].append(matmul_peak(device, precision))
    command = (f"python bench/train_step.py --device {args.device} --threads {args.threads} --batch {args.batch} --steps {args.steps}"
               + (f" --compile {args.compile}" if args.compile != "off" else ""))
    payload = {"command": command, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": args.threads, "matmul_peak_flop_per_s": peaks, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"\n`{command}` — matmul peaks (before / after), GFLOP/s: "
          + "; ".join(f"{p} {v[0] / 1e9:.1f} / {v[1] / 1e9:.1f}" for p, v in peaks.items()) + "\n")
    print("| backbone | px | precision | channels_last | img/s | GFLOP/step | GFLOP/s | share of peak |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['image_size']} | {r['precision']} | {r['channels_last']} | {r['images_per_s']:.1f} | "
              f"{r['gflop_per_step']:.2f} | {r['flop_per_s'] / 1e9:.1f} | {r['share_of_peak']:.0%} |")


if __name__ == "__main__":
    main()
