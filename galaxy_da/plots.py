"""Figures for one run (evaluation, training history) and for a sweep (selection rules).

Every function returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API, never through ``pyplot``: no global figure registry, no
interactive backend, safe in Ray workers and threads. :func:`save` writes PNG
(or any format matplotlib knows from the suffix) through the Agg renderer.
Each figure carries its run name in the suptitle, axis labels, class names and
a legend where there is more than one series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import spearmanr

from galaxy_da.domain_metrics import l2_normalise, subsample
from galaxy_da.epoch_numbers import shown
from galaxy_da.metrics import reliability_bins

DOMAIN_COLOURS = {"source": "tab:blue", "target": "tab:orange"}
DOMAIN_MARKERS = {"source": "o", "target": "^"}
# Class colours stay distinct from the domain colours, so the two embedding panels never clash.
CLASS_COLOURS = ("tab:red", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
UNLABELLED_COLOUR = "lightgrey"


def _figure(title: str, columns: int, rows: int = 1, panel_size: tuple[float, float] = (4.6, 4.0)) -> tuple[Figure, np.ndarray]:
    """A titled figure with a (rows, columns) grid of axes, returned flat."""
    fig = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return fig, axes


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parents created) and release its artists; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    fig.clear()
    return path


# --------------------------------------------------------------------------- confusion


def _draw_confusion(ax, cm: np.ndarray, class_names: Sequence[str], normalise: bool) -> None:
    counts = np.asarray(cm, dtype=np.float64)
    row_totals = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0) if normalise else counts
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(shown.max(), 1))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = (1 if normalise else max(shown.max(), 1)) / 2
    for (row, col), value in np.ndenumerate(shown):
        text = f"{value:.2f}" if normalise else f"{int(value)}"
        ax.text(col, row, text, ha="center", va="center", color="white" if value > threshold else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=30, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("row-normalised (recall on the diagonal)" if normalise else f"counts (N = {int(counts.sum())})")


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], title: str, normalise: bool = False) -> Figure:
    """One confusion matrix (K, K), rows true and columns predicted; counts or row fractions."""
    fig, (ax,) = _figure(title, 1)
    _draw_confusion(ax, cm, class_names, normalise)
    return fig


def plot_confusions(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Counts and row-normalised confusion matrices (K, K) side by side."""
    fig, axes = _figure(title, 2)
    for ax, normalise in zip(axes, (False, True)):
        _draw_confusion(ax, cm, class_names, normalise)
    return fig


# --------------------------------------------------------------------------- calibration and curves


def plot_reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 15, title: str = "") -> Figure:
    """Reliability diagram (accuracy vs confidence per bin, ECE in the title) and the confidence histogram.

    Uses :func:`galaxy_da.metrics.reliability_bins`, so the ECE shown equals the
    logged ``ece_<bins>``. Shapes: ``labels`` (N,), ``probs`` (N, K).
    """
    binned = reliability_bins(labels, probs, bins)
    centres = (binned.edges[:-1] + binned.edges[1:]) / 2
    width = 1.0 / bins
    fig, (reliability, histogram) = _figure(title, 2)
    accuracy, confidence = np.nan_to_num(binned.accuracy), np.nan_to_num(binned.confidence)
    reliability.bar(centres, accuracy, width=width, edgecolor="black", label="accuracy")
    reliability.bar(
        centres,
        np.abs(confidence - accuracy),
        bottom=np.minimum(accuracy, confidence),
        width=width,
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        label="gap to mean confidence",
    )
    reliability.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    reliability.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy")
    reliability.set_title(f"reliability, ECE({bins}) = {binned.ece:.3f}")
    reliability.legend(loc="upper left")
    histogram.bar(centres, binned.counts, width=width, edgecolor="black")
    histogram.set(
        xlim=(0, 1), xlabel="confidence (max probability)", ylabel="galaxies", title=f"confidence histogram (N = {len(labels)})"
    )
    return fig


def plot_roc_pr(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Per-class one-vs-rest ROC and precision-recall curves, with AUC and AP in the legends.

    A class absent from ``labels`` has no curve and is marked "absent". Shapes:
    ``labels`` (N,), ``probs`` (N, K).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    labels = np.asarray(labels)
    fig, (roc, pr) = _figure(title, 2)
    for index, name in enumerate(class_names):
        positives = labels == index
        if positives.all() or not positives.any():
            roc.plot([], [], label=f"{name}: absent")
            continue
        false_pos, true_pos, _ = roc_curve(positives, probs[:, index])
        roc.plot(false_pos, true_pos, label=f"{name}: AUC {roc_auc_score(positives, probs[:, index]):.3f}")
        precision, recall, _ = precision_recall_curve(positives, probs[:, index])
        line = pr.plot(recall, precision, label=f"{name}: AP {average_precision_score(positives, probs[:, index]):.3f}")
        pr.axhline(positives.mean(), color=line[0].get_color(), linestyle=":", linewidth=1)
    roc.plot([0, 1], [0, 1], "k--", label="chance")
    roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title="ROC, one vs rest")
    pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title="precision-recall (dotted: prevalence)")
    roc.legend(loc="lower right")
    pr.legend(loc="lower left")
    return fig


# --------------------------------------------------------------------------- embeddings and per-class bars


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA init, perplexity min(30, (N-1)/3)) of L2-normalised features (N, D) -> (N, 2)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(l2_normalise(features))


def _scatter(ax, xy: np.ndarray, domain: str, colour: str, label: str) -> None:
    ax.scatter(*xy.T, s=8, alpha=0.6, c=colour, marker=DOMAIN_MARKERS[domain], label=label)


def plot_embedding(
    src_feats: np.ndarray,
    tgt_feats: np.ndarray,
    src_labels: np.ndarray,
    tgt_labels: Optional[np.ndarray],
    class_names: Sequence[str],
    title: str,
    seed: int = 0,
    max_points: int = 1500,
) -> Figure:
    """t-SNE of source and target features together: by domain (left) and by class (right).

    Each domain is subsampled (seeded) to at most ``max_points // 2`` rows. On
    the right, colour is the class and the marker the domain; target points are
    grey when ``tgt_labels`` is None (target labels are for evaluation only).
    Shapes: ``src_feats`` (n, D), ``tgt_feats`` (m, D), ``src_labels`` (n,), ``tgt_labels`` (m,) or None.
    """
    rng = np.random.default_rng(seed)
    per_domain = max_points // 2
    src_rows = subsample(np.arange(len(src_feats)), per_domain, rng)
    tgt_rows = subsample(np.arange(len(tgt_feats)), per_domain, rng)
    embedded = tsne_embedding(np.concatenate([src_feats[src_rows], tgt_feats[tgt_rows]]), seed)
    points = {"source": embedded[: len(src_rows)], "target": embedded[len(src_rows) :]}
    classes = {
        "source": np.asarray(src_labels)[src_rows],
        "target": None if tgt_labels is None else np.asarray(tgt_labels)[tgt_rows],
    }
    fig, (by_domain, by_class) = _figure(title, 2, panel_size=(5.2, 4.6))
    for domain, xy in points.items():
        _scatter(by_domain, xy, domain, DOMAIN_COLOURS[domain], f"{domain} (n={len(xy)})")
        if classes[domain] is None:
            _scatter(by_class, xy, domain, UNLABELLED_COLOUR, f"{domain}, unlabelled")
            continue
        for index, name in enumerate(class_names):
            rows = classes[domain] == index
            _scatter(by_class, xy[rows], domain, CLASS_COLOURS[index % len(CLASS_COLOURS)], f"{domain} {name}")
    for ax, panel in ((by_domain, "coloured by domain"), (by_class, "coloured by class, marker = domain")):
        ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2", title=panel, xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return fig


def _recall_of(recalls: Mapping[str, float], name: str) -> float:
    """Accepts ``{class: recall}`` or a :func:`~galaxy_da.metrics.classification_metrics` dict."""
    return float(recalls[name] if name in recalls else recalls[f"recall/{name}"])


def plot_per_class_recall(
    src_recall: Mapping[str, float], tgt_recall: Mapping[str, float], class_names: Sequence[str], title: str
) -> Figure:
    """Grouped bars of per-class recall on source and target, values printed on the bars.

    Each mapping is ``{class: recall}`` or a ``classification_metrics`` result
    (keys ``recall/<class>``).
    """
    fig, (ax,) = _figure(title, 1, panel_size=(5.5, 4.0))
    positions = np.arange(len(class_names))
    width = 0.38
    for offset, (domain, recalls) in zip((-width / 2, width / 2), (("source", src_recall), ("target", tgt_recall))):
        values = [_recall_of(recalls, name) for name in class_names]
        bars = ax.bar(positions + offset, values, width, color=DOMAIN_COLOURS[domain], label=domain)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(positions, class_names)
    ax.set(ylim=(0, 1.1), ylabel="recall", xlabel="class", title="per-class recall")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- training history and sweeps

def _alignment_diagnostic(key: str) -> bool:
    return key.startswith("align/") and not key.endswith("_max") and not any(
        part in key for part in ("marginal_error", "iterations", "epsilon")
    )


# (panel title, which keys, y scale)
HISTORY_PANELS = (
    ("losses", lambda key: key.startswith("train/loss"), "linear"),
    ("training throughput (images/s)", lambda key: key == "train/images_per_s", "linear"),
    ("source validation", lambda key: key in ("src_val/acc", "src_val/macro_f1"), "linear"),
    ("label-free selection score", lambda key: key.startswith("select/"), "linear"),
    ("schedules", lambda key: key.startswith("schedule/"), "linear"),
    ("OT solver: worst marginal error of the epoch", lambda key: key.endswith("marginal_error_max"), "log"),
    ("alignment diagnostics (epoch means)", _alignment_diagnostic, "linear"),
)


HISTORY_COLUMNS = 4  # panels per row: seven panels make a 4 x 2 grid of about 1730 x 720 px


def span_a_decade(ax) -> None:
    """Widen a log y-axis that spans less than a decade to one decade about its geometric centre.

    On a narrower view matplotlib labels minor ticks with a few significant
    digits, and nearly equal values (an OT error that hardly moves between
    epochs) show one label repeated down the axis; over a decade the ticks are
    1, 2, ..., 9 times a power of ten, each labelled once.
    """
    low, high = ax.get_ylim()
    if 0 < low and high / low < 10:
        centre = np.sqrt(low * high)
        ax.set_ylim(centre / np.sqrt(10), centre * np.sqrt(10))


def plot_history(history: list[dict], title: str, marked_epoch: Optional[int] = None, marked_label: str = "") -> Figure:
    """Per-epoch curves, one panel per metric family present in ``history``, on a grid for a screen.

    ``history`` is one dict per epoch with an ``epoch`` key (the list index if
    absent) and namespaced metrics; panels: ``train/*`` losses,
    ``src_val/acc`` and ``src_val/macro_f1``, ``select/*`` (the selection
    score), ``schedule/*``, ``align/*``. A metric missing at some epoch is a
    gap in its curve. ``marked_epoch`` draws a dashed line in every panel
    (the checkpoint being evaluated, e.g. ``best.pt``), labelled ``marked_label``.
    Epochs are 0-based indices here and drawn numbered from 1, as every epoch a
    person reads (:mod:`galaxy_da.epoch_numbers`).
    """
    epochs = np.array([shown(record.get("epoch", index)) for index, record in enumerate(history)])
    keys = sorted({key for record in history for key in record if key != "epoch"})
    panels = [(name, [key for key in keys if belongs(key)], scale) for name, belongs, scale in HISTORY_PANELS]
    panels = [panel for panel in panels if panel[1]] or [("no metrics logged", [], "linear")]
    columns = min(HISTORY_COLUMNS, len(panels))
    fig, axes = _figure(title, columns, rows=-(-len(panels) // columns), panel_size=(3.6, 3.0))
    for ax, (name, members, scale) in zip(axes, panels):
        for key in members:
            values = np.array([record.get(key, np.nan) for record in history], dtype=np.float64)
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
        if marked_epoch is not None:
            ax.axvline(shown(marked_epoch), color="black", linestyle="--", linewidth=1, label=marked_label or f"epoch {shown(marked_epoch)}")
        ax.set(xlabel="epoch (from 1)", title=name, yscale=scale)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if scale == "log":
            span_a_decade(ax)
        if members:
            ax.legend(fontsize=6)
    for ax in axes[len(panels):]:
        ax.remove()
    return fig


def _rank_correlation(values: np.ndarray, oracle: np.ndarray) -> str:
    """``Spearman rho = 0.42``, or why it is undefined (scipy warns and returns NaN on constant input)."""
    finite = np.isfinite(values) & np.isfinite(oracle)
    if min(len(np.unique(values[finite])), len(np.unique(oracle[finite]))) < 2:
        return "Spearman rho undefined (all candidates tie)"
    return f"Spearman rho = {spearmanr(values[finite], oracle[finite]).statistic:.2f}"


def plot_score_vs_oracle(scores: Mapping[str, Sequence[float]], oracle: Sequence[float], title: str) -> Figure:
    """For each label-free rule: its score against the ORACLE (target test macro-F1), one point per candidate.

    The panel title gives Spearman's rank correlation; a star marks the
    candidate the rule would pick (its argmax) and a ring the oracle's best, so
    the gap between them is the cost of selecting without target labels.
    """
    oracle = np.asarray(oracle, dtype=np.float64)
    fig, axes = _figure(title, max(len(scores), 1), panel_size=(3.8, 3.6))
    for ax, (rule, values) in zip(axes, scores.items()):
        values = np.asarray(values, dtype=np.float64)
        ax.scatter(values, oracle, s=18, alpha=0.7, label="candidate")
        picked, best = int(np.nanargmax(values)), int(np.nanargmax(oracle))
        ax.scatter(values[picked], oracle[picked], marker="*", s=160, c="tab:red", label=f"{rule} pick: {oracle[picked]:.3f}")
        ax.scatter(
            values[best], oracle[best], s=120, facecolors="none", edgecolors="black", label=f"oracle best: {oracle[best]:.3f}"
        )
        ax.set(xlabel=f"{rule} score (higher = better)", ylabel="ORACLE: target test macro-F1")
        ax.set_title(f"{rule}: {_rank_correlation(values, oracle)}")
        ax.legend(fontsize=7, loc="best")
    return fig
