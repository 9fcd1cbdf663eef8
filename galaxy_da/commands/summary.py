"""``galaxy-da summary``: class counts per domain (each target survey apart) and split, from the manifest."""

from __future__ import annotations

import argparse

from galaxy_da.commands.synth import DEFAULT_DATA


def dataset_summary(uri: str) -> str:
    """Class counts per domain (each target survey apart) and split, from the manifest."""
    from galaxy_da.data.manifest import parts
    from galaxy_da.data.reader import ShardDataset

    dataset = ShardDataset(uri)
    names = dataset.class_names
    lines = [f"dataset {uri}  (images {'x'.join(map(str, dataset.image_shape))}, manifest sha256 {dataset.manifest_hash[:12]})"]
    lines.append(f"  {'domain':<12} {'split':<6} " + " ".join(f"{n:>10}" for n in names) + f" {'total':>7}")
    for domain, survey, splits in parts(dataset.manifest):
        label = domain if survey is None else f"{domain} {survey}"
        domain_total = [0] * len(names)
        for split, counts in splits.items():
            row = [counts[n] for n in names]
            domain_total = [a + b for a, b in zip(domain_total, row)]
            lines.append(f"  {label:<12} {split:<6} " + " ".join(f"{c:>10}" for c in row) + f" {sum(row):>7}")
        share = " ".join(f"{c / max(1, sum(domain_total)):>10.1%}" for c in domain_total)
        lines.append(f"  {label:<12} {'prior':<6} {share} {sum(domain_total):>7}")
    if len(dataset.targets) > 1:
        lines.append(f"  target surveys: {', '.join(dataset.targets)} (data.target picks one; default {dataset.requested_target})")
    return "\n".join(lines)


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?", default=DEFAULT_DATA, help="dataset path or URI (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    print(dataset_summary(args.data))
    return 0


configure = add_dataset_argument
