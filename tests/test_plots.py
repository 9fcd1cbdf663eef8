"""Every plot function builds a titled figure and writes a non-empty PNG."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.special import softmax

from galaxy_da import plots
from galaxy_da.metrics import classification_metrics, confusion_matrix

CLASSES = ("elliptical", "irregular", "spiral")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=120, p=[0.25, 0.15, 0.6])
    probs = softmax(2.0 * np.eye(3)[labels] + rng.normal(size=(120, 3)), axis=1)
    return labels, probs


def _features(rng: np.random.Generator, labels: np.ndarray, shift: float) -> np.ndarray:
    centres = np.random.default_rng(9).normal(size=(3, 16)) * 3
    return centres[labels] + rng.normal(size=(len(labels), 16)) + shift


def _figures(predictions):
    labels, probs = predictions
    rng = np.random.default_rng(1)
    cm = confusion_matrix(labels, probs.argmax(axis=1), 3)
    src_labels, tgt_labels = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    src, tgt = _features(rng, src_labels, 0.0), _features(rng, tgt_labels, 1.0)
    metrics = classification_metrics(labels, probs, CLASSES)
    history = [
        {
            "epoch": epoch,
            "train/loss": 1 / (epoch + 1),
            "src_val/macro_f1": 0.5 + 0.04 * epoch,
            "select/src_val": 0.5 + 0.04 * epoch,
            "schedule/align_weight": 0.1 * epoch,
            "align/sinkhorn": 0.3 - 0.02 * epoch,
        }
        for epoch in range(6)
    ]
    oracle = rng.uniform(0.3, 0.7, 12)
    return {
        "confusion": plots.plot_confusion(cm, CLASSES, "run-a", normalise=True),
        "confusions": plots.plot_confusions(cm, CLASSES, "run-a"),
        "reliability": plots.plot_reliability(labels, probs, bins=10, title="run-a"),
        "roc_pr": plots.plot_roc_pr(labels, probs, CLASSES, "run-a"),
        "embedding": plots.plot_embedding(src, tgt, src_labels, tgt_labels, CLASSES, "run-a", max_points=100),
        "embedding_unlabelled_target": plots.plot_embedding(src, tgt, src_labels, None, CLASSES, "run-a", max_points=100),
        "recall": plots.plot_per_class_recall(metrics, {"elliptical": 0.2, "irregular": 0.05, "spiral": 0.9}, CLASSES, "run-a"),
        "history": plots.plot_history(history, "run-a"),
        "score_vs_oracle": plots.plot_score_vs_oracle(
            {"src_val": oracle + rng.normal(0, 0.05, 12), "snd": rng.uniform(4, 5, 12)}, oracle, "sweep-b"
        ),
    }


def test_every_plot_writes_a_titled_png(predictions, tmp_path):
    for name, fig in _figures(predictions).items():
        assert isinstance(fig, Figure), name
        assert fig.get_suptitle() in ("run-a", "sweep-b"), name
        assert all(ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"), name
        path = plots.save(fig, tmp_path / "nested" / f"{name}.png")
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_history_has_one_panel_per_metric_family_present():
    history = [{"epoch": 0, "train/loss": 1.0, "src_val/acc": 0.5}, {"epoch": 1, "train/loss": 0.5}]
    fig = plots.plot_history(history, "run-c")
    assert [ax.get_title() for ax in fig.axes] == ["losses", "source validation"]
    src_val_line = fig.axes[1].get_lines()[0]
    assert np.isnan(src_val_line.get_ydata()[1])  # a missing epoch is a gap, not a zero


def test_a_full_history_is_laid_out_for_a_screen_and_marks_the_evaluated_epoch(tmp_path):
    """Seven metric families: a 4 x 2 grid within 1920 x 1080 px, not 3,696 x 432 px in one row."""
    history = [
        {"epoch": e, "train/loss": 1.0 / (e + 1), "train/images_per_s": 500.0, "src_val/acc": 0.5, "select/src_val": 0.4,
         "schedule/blur": 0.5, "align/topk_ot_marginal_error_max": 1e-9, "align/ot_cost": 0.2}
        for e in range(5)
    ]
    fig = plots.plot_history(history, "run-f", marked_epoch=3, marked_label="best.pt (epoch 3)")
    assert len(fig.axes) == 7 and all(ax.get_title() for ax in fig.axes)
    assert {round(ax.get_position().y0, 2) for ax in fig.axes}.__len__() == 2  # two rows
    assert all(any(line.get_label() == "best.pt (epoch 3)" for line in ax.get_lines()) for ax in fig.axes)
    png = plots.save(fig, tmp_path / "history.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width <= 1920 and height <= 1080 and width / height < 3, (width, height)


def test_confusion_cells_show_counts_and_row_fractions():
    cm = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 4]])
    fig = plots.plot_confusions(cm, CLASSES, "run-d")
    counts_panel, fraction_panel = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [text.get_text() for text in counts_panel.texts][:3] == ["3", "1", "0"]
    assert [text.get_text() for text in fraction_panel.texts][3:6] == ["0.00", "0.50", "0.50"]


def test_plots_never_import_pyplot(tmp_path):
    # A fresh interpreter: building and saving a figure must not load pyplot or pick a GUI backend.
    script = (
        "import sys, numpy as np\n"
        "from galaxy_da import plots\n"
        f"plots.save(plots.plot_confusion(np.eye(3, dtype=int), ['a', 'b', 'c'], 'run-e'), {str(tmp_path / 'c.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert (tmp_path / "c.png").stat().st_size > 0


def test_score_vs_oracle_says_why_a_tie_has_no_rank_correlation(recwarn):
    fig = plots.plot_score_vs_oracle({"src_val": [0.28, 0.28, 0.28]}, [0.29, 0.29, 0.29], "sweep-g")
    assert fig.axes[0].get_title() == "src_val: Spearman rho undefined (all candidates tie)"
    assert not [w for w in recwarn if "ConstantInput" in type(w.message).__name__]
    assert plots.plot_score_vs_oracle({"snd": [1.0, 2.0, 3.0]}, [0.1, 0.3, 0.2], "sweep-h").axes[0].get_title() == "snd: Spearman rho = 0.50"
