"""Training-step throughput per backbone, and its share of the machine's matmul peak.

For each backbone one full training step (forward, focal loss, backward, AdamW)
runs on a batch of 64 random 3-band stamps. The FLOPs of forward + backward are
counted with ``torch.utils.flop_counter.FlopCounterMode`` and divided by the
median step time; the machine's single-precision peak is measured in the same
run as the best of several large ``torch.mm`` calls with the same thread count.

Run: ``python bench/train_step.py [--threads 2] [--steps 10] [--json bench/results/train_step.json]``
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

from galaxy_da.config import ModelConfig
from galaxy_da.losses.focal import FocalLoss
from galaxy_da.models.registry import build_model

BACKBONES = {
    "cnn": (ModelConfig(backbone="cnn"), 64),
    "resnet18": (ModelConfig(backbone="resnet18"), 64),
    "steerable-C8 (w8)": (ModelConfig(backbone="steerable", group="C8", width=8), 65),
    "steerable-D4 (w8)": (ModelConfig(backbone="steerable", group="D4", width=8), 65),
}


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best observed fp32 FLOP/s of an n x n matmul: 2 n^3 / t."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, cfg: ModelConfig, size: int, batch: int, steps: int, channels_last: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, 3, 3, size)
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 3, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    loss_fn = FocalLoss(gamma=2.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        logits, _ = model(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        logits, _ = model(images)
        loss_fn(logits, labels).backward()
    flops = counter.get_total_flops()
    step()  # warm-up
    times = [_timed(step) for _ in range(steps)]
    median = statistics.median(times)
    return {"backbone": name, "image_size": size, "batch": batch, "channels_last": channels_last,
            "step_s": median, "images_per_s": batch / median, "gflop_per_step": flops / 1e9, "flop_per_s": flops / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--json", type=Path, default=Path("bench/results/train_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak()
    rows = []
    for name in args.backbones:
        cfg, size = BACKBONES[name]
        for channels_last in (False, True):
            row = measure(name, cfg, size, args.batch, args.steps, channels_last)
            row["share_of_peak"] = row["flop_per_s"] / peak
            rows.append(row)
            print(f"{name:<20} cl={channels_last!s:<5} {row['images_per_s']:7.1f} img/s  "
                  f"{row['flop_per_s'] / 1e9:6.1f} GFLOP/s  {row['share_of_peak']:.0%} of peak", flush=True)
    peak_after = matmul_peak()
    command = f"python bench/train_step.py --threads {args.threads} --batch {args.batch} --steps {args.steps}"
    payload = {"command": command, "threads": args.threads, "matmul_peak_flop_per_s": [peak, peak_after], "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"\n`{command}` — fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (before) / {peak_after / 1e9:.1f} (after)\n")
    print("| backbone | px | channels_last | img/s | GFLOP/step | GFLOP/s | share of peak |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['image_size']} | {r['channels_last']} | {r['images_per_s']:.1f} | "
              f"{r['gflop_per_step']:.2f} | {r['flop_per_s'] / 1e9:.1f} | {r['share_of_peak']:.0%} |")


if __name__ == "__main__":
    main()
