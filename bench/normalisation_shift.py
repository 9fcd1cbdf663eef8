"""Each class's central brightness in σ units after each input normalisation, per domain: a measurement.

For each input normalisation a trial can use (``data.normalization``: ``per_domain``,
``shared``), the statistics are computed exactly as a trial does
(:data:`galaxy_da.trial_data.NORMALISATIONS`, from source train and target adapt),
and each galaxy's central brightness is measured after standardisation: the mean of
the central ``--box`` × ``--box`` pixels over all bands, in units of the channel std
(mean-subtracted). The table gives the per-domain, per-class median, and the
colour ``band 0 − band 2`` of the same box. It was written to test the story "a
source-trained classifier learns bright centre → elliptical, and per-domain
standardisation moves target spirals onto source ellipticals"; its own numbers do
not support that story (target ellipticals come out dimmer than target spirals, yet
source-only calls them elliptical), so it is kept as a measurement, not an
explanation (BENCHMARKS.md, "Source-only and the input normalisation").

Target labels are read here (the evaluation view) to split the target by class:
this is analysis of the data, never part of training or selection.

Run: ``python bench/normalisation_shift.py --data data/quality [--json bench/results/normalisation_shift.json]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from galaxy_da.data.loader import ChannelStats
from galaxy_da.data.reader import ImageSet, ShardDataset
from galaxy_da.trial_data import NORMALISATIONS


def central_stats(images: np.ndarray, stats: ChannelStats, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised central brightness (mean over bands) and colour (band 0 − band 2), each (N,)."""
    height = images.shape[-1]
    lo = (height - box) // 2
    centre = images[:, :, lo : lo + box, lo : lo + box].astype(np.float64).mean(axis=(2, 3)) / 255.0  # (N, C)
    z = (centre - np.asarray(stats.mean)) / np.asarray(stats.std)
    return z.mean(axis=1), z[:, 0] - z[:, -1]


def table(dataset: ShardDataset, box: int) -> list[dict]:
    view = dataset.training_view()
    source_train, target_adapt = view.source("train"), view.target("adapt")
    evaluation = dataset.evaluation_view()
    by_domain: dict[str, ImageSet] = {"source": evaluation.labelled("source", "val"), "target": evaluation.labelled("target", "test")}
    rows = []
    for normalisation in ("per_domain", "shared"):
        source_stats, target_stats = NORMALISATIONS[normalisation](source_train, target_adapt)
        for domain, stats in (("source", source_stats), ("target", target_stats)):
            data = by_domain[domain]
            brightness, colour = central_stats(data.images, stats, box)
            for index, name in enumerate(dataset.class_names):
                mask = data.labels == index
                rows.append({"normalization": normalisation, "domain": domain, "class": name, "n": int(mask.sum()),
                             "median_central_sigma": float(np.median(brightness[mask])), "median_colour_0_minus_2": float(np.median(colour[mask]))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--box", type=int, default=9, help="side of the central box in pixels (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "normalisation_shift.json")
    args = parser.parse_args()
    dataset = ShardDataset(args.data)
    rows = table(dataset, args.box)
    print("| normalisation | domain | class | n | median central brightness (σ) | median colour band0−band2 (σ) |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['normalization']} | {row['domain']} | {row['class']} | {row['n']} | {row['median_central_sigma']:.2f} | {row['median_colour_0_minus_2']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": f"python bench/normalisation_shift.py --data {args.data} --box {args.box}",
                                     "manifest_sha256": dataset.manifest_hash, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
