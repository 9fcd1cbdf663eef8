"""The figures of a run's evaluation (``galaxy-da eval``): one module, one registry per figure kind.

:data:`SPLIT_FIGURES` are drawn once per labelled split (source val, target
test), :data:`RUN_FIGURES` once per run; :func:`write_figures` saves them all as PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure

from galaxy_da.epoch_numbers import shown
from galaxy_da.eval import LABELLED_SPLITS, SPLIT_TITLES, Evaluation
from galaxy_da.metrics import confusion_matrix

def _split_title(evaluation: Evaluation, prefix: str) -> str:
    return f"{evaluation.title}: {SPLIT_TITLES[prefix]}"


def _confusions(evaluation: Evaluation, prefix: str) -> Figure:
    from galaxy_da.plots import plot_confusions

    outputs, names = evaluation.predictions[prefix], evaluation.run.class_names
    cm = confusion_matrix(outputs.labels, outputs.probs.argmax(axis=1), len(names))
    return plot_confusions(cm, names, _split_title(evaluation, prefix))


def _reliability(evaluation: Evaluation, prefix: str) -> Figure:
    from galaxy_da.plots import plot_reliability

    outputs = evaluation.predictions[prefix]
    return plot_reliability(outputs.labels, outputs.probs, title=_split_title(evaluation, prefix))


def _roc_pr(evaluation: Evaluation, prefix: str) -> Figure:
    from galaxy_da.plots import plot_roc_pr

    outputs = evaluation.predictions[prefix]
    return plot_roc_pr(outputs.labels, outputs.probs, evaluation.run.class_names, _split_title(evaluation, prefix))


def _embedding(evaluation: Evaluation) -> Figure:
    from galaxy_da.plots import plot_embedding

    source, target = evaluation.predictions["src_val"], evaluation.predictions["tgt_test"]
    return plot_embedding(
        source.features, target.features, source.labels, target.labels, evaluation.run.class_names,
        f"{evaluation.title}: t-SNE of source val and target test features",
    )


def _per_class_recall(evaluation: Evaluation) -> Figure:
    from galaxy_da.plots import plot_per_class_recall

    def recalls(prefix: str) -> dict[str, float]:
        return {name: evaluation.metrics[f"eval/{prefix}/recall/{name}"] for name in evaluation.run.class_names}

    return plot_per_class_recall(
        recalls("src_val"), recalls("tgt_test"), evaluation.run.class_names, f"{evaluation.run.run_name} ({evaluation.run.checkpoint}.pt)"
    )


def _history(evaluation: Evaluation) -> Figure:
    from galaxy_da.plots import plot_history

    run = evaluation.run
    return plot_history(
        run.history, f"{run.run_name}: training history", marked_epoch=run.checkpoint_epoch,
        marked_label=f"{run.checkpoint}.pt (epoch {shown(run.checkpoint_epoch)})",
    )


SPLIT_FIGURES: dict[str, Callable[[Evaluation, str], Figure]] = {
    "confusion": _confusions,
    "reliability": _reliability,
    "roc_pr": _roc_pr,
}
RUN_FIGURES: dict[str, Callable[[Evaluation], Figure]] = {
    "embedding": _embedding,
    "per_class_recall": _per_class_recall,
    "training_history": _history,
}


def write_figures(evaluation: Evaluation, folder: Path) -> list[Path]:
    """Every figure of :data:`SPLIT_FIGURES` (per labelled split) and :data:`RUN_FIGURES` as PNG."""
    from galaxy_da.plots import save

    paths = [
        save(make(evaluation, prefix), folder / f"{name}_{prefix}.png")
        for name, make in SPLIT_FIGURES.items()
        for prefix in LABELLED_SPLITS
    ]
    return paths + [save(make(evaluation), folder / f"{name}.png") for name, make in RUN_FIGURES.items()]


