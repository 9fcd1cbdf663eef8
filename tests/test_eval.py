"""``python -m galaxy_da.eval --run-id``: real tracked runs on tiny data in a tmp sqlite store."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from galaxy_da import eval as run_eval
from galaxy_da.config import load_config
from galaxy_da.data.reader import ShardDataset
from galaxy_da.tracking import ensure_experiment
from galaxy_da.trial import run_trial
from tests.conftest import write_toy_dataset
from tests.test_train import TINY

PLOTS = {
    "confusion_src_val.png", "confusion_tgt_test.png", "reliability_src_val.png", "reliability_tgt_test.png",
    "roc_pr_src_val.png", "roc_pr_tgt_test.png", "embedding.png", "per_class_recall.png", "training_history.png",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def trained_run(toy_dataset, store) -> str:
    cfg = load_config(None, [f"data.path={toy_dataset}", *TINY, "device=cpu", f"tracking.tracking_uri={store}"])
    return run_trial(cfg).run_id


def test_eval_module_logs_metrics_and_plots_back_to_the_run(trained_run, store, toy_dataset, tmp_path):
    out = tmp_path / "metrics.json"
    command = [sys.executable, "-m", "galaxy_da.eval", "--run-id", trained_run, "--tracking-uri", store, "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "target test" in done.stdout and "ORACLE" in done.stdout
    assert f"logged to run {trained_run} in {store}" in done.stdout and "eval/plots/" in done.stdout  # where the plots went
    assert done.stdout.strip().splitlines()[-1].startswith("next: ")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    logged = client.get_run(trained_run).data.metrics
    for key in ("eval/tgt_test/macro_f1", "eval/src_val/acc", "eval/tgt_test/majority_acc", "eval/domain/a_distance",
                "eval/domain/probe_auc", "eval/domain/sinkhorn", "eval/domain/centroid_dist/mean", "eval/select/oracle",
                "eval/select/src_val", "eval/select/entropy", "eval/select/dev", "eval/select/snd"):
        assert key in logged, key
    assert {Path(a.path).name for a in client.list_artifacts(trained_run, "eval/plots")} == PLOTS
    assert {a.path for a in client.list_artifacts(trained_run, "eval")} >= {"eval/metrics.json", "eval/summary.txt"}

    written = json.loads(out.read_text())
    assert written["eval/tgt_test/macro_f1"] == pytest.approx(logged["eval/tgt_test/macro_f1"])
    # the oracle is the target test macro-F1, and the majority baseline predicts the source-train majority class
    assert written["eval/select/oracle"] == pytest.approx(written["eval/tgt_test/macro_f1"])
    dataset = ShardDataset(str(toy_dataset))
    test_labels = dataset.evaluation_view().labelled("target", "test").labels
    majority = int(np.argmax(dataset.counts("source", "train")))
    assert written["eval/tgt_test/majority_acc"] == pytest.approx(np.mean(test_labels == majority))
    assert 0.0 <= written["eval/domain/a_distance"] <= 2.0
    # the true target priors (evaluation only) beside each label-free estimate of them
    truth = np.bincount(test_labels, minlength=len(dataset.class_names)) / len(test_labels)
    assert [written[f"eval/tgt_test/prior/{name}"] for name in dataset.class_names] == pytest.approx(truth.tolist())
    for estimator in ("bbse", "em"):
        estimate = [written[f"eval/label_shift/{estimator}/prior/{name}"] for name in dataset.class_names]
        assert sum(estimate) == pytest.approx(1.0)
        assert written[f"eval/label_shift/{estimator}/max_abs_error"] == pytest.approx(np.abs(np.array(estimate) - truth).max())


def test_unknown_run_id_is_a_clear_error(store, capsys):
    assert run_eval.main(["--run-id", "0123456789abcdef", "--tracking-uri", store]) != 0
    err = capsys.readouterr().err
    assert "0123456789abcdef" in err and "not found" in err and "Traceback" not in err


def test_run_without_checkpoint_is_a_clear_error(store, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    bare = client.create_run(ensure_experiment(client, "bare", store)).info.run_id
    assert run_eval.main(["--run-id", bare, "--tracking-uri", store]) != 0
    err = capsys.readouterr().err
    assert f"run {bare!r} has no checkpoints/best.pt" in err and "Traceback" not in err


def test_other_dataset_warns_with_both_manifest_hashes(trained_run, store, toy_dataset, tmp_path, caplog):
    other = write_toy_dataset(tmp_path / "other", seed=1)
    trained_hash, other_hash = ShardDataset(str(toy_dataset)).manifest_hash, ShardDataset(str(other)).manifest_hash
    assert trained_hash != other_hash
    out = tmp_path / "last.json"
    args = ["--run-id", trained_run, "--tracking-uri", store, "--data", str(other), "--checkpoint", "last", "--no-log", "--json", str(out)]
    with caplog.at_level(logging.WARNING, logger="galaxy_da.eval"):
        assert run_eval.main(args) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(trained_hash in message and other_hash in message for message in warnings), warnings
    assert json.loads(out.read_text())["eval/checkpoint_epoch"] == 1.0  # last.pt of a 2-epoch trial


def test_same_dataset_does_not_warn(trained_run, store, caplog):
    with caplog.at_level(logging.WARNING, logger="galaxy_da.eval"):
        run = run_eval.load_run(trained_run, store)
        run_eval.open_dataset_for(run)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert run.checkpoint == "best" and run.class_names == ["elliptical", "irregular", "spiral"]


def test_summary_values_share_one_column(trained_run, store, capsys):
    """Long labels (``centroid_dist/elliptical``) do not push their value out of the column."""
    assert run_eval.main(["--run-id", trained_run, "--tracking-uri", store, "--no-log"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("metric"))
    column_end = header.index("source val") + len("source val")
    numeric = [line for line in lines[2:] if line[:column_end].rstrip()[-1:].isdigit()]
    assert any("centroid_dist/elliptical" in line for line in numeric)
    for line in numeric:
        assert line[column_end - 1].isdigit() and line[column_end:column_end + 1] in ("", " "), line


def test_history_figure_covers_the_whole_run_not_only_up_to_best(trained_run, store, tmp_path):
    """best.pt's history stops at the best epoch; the history drawn is last.pt's, every epoch."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint

    client = MlflowClient(tracking_uri=store)
    client.download_artifacts(trained_run, "checkpoints", str(tmp_path))
    assert (tmp_path / "checkpoints" / LAST).is_file()
    best = load_checkpoint(tmp_path / "checkpoints" / BEST)
    best["history"], best["epoch"] = best["history"][:1], 0  # a run whose best epoch came first
    save_checkpoint(best, tmp_path / "checkpoints" / BEST)
    run_id = client.create_run(client.get_run(trained_run).info.experiment_id).info.run_id
    client.log_artifacts(run_id, str(tmp_path / "checkpoints"), "checkpoints")
    run = run_eval.load_run(run_id, store)
    assert run.checkpoint_epoch == 0 and [record["epoch"] for record in run.history] == [0, 1]


def test_history_json_is_strict_json(trained_run, store, tmp_path):
    """json.dumps wrote -Infinity for best/score before the first eligible epoch; strict parsers reject it."""
    from mlflow.tracking import MlflowClient

    text = Path(MlflowClient(tracking_uri=store).download_artifacts(trained_run, "history.json", str(tmp_path))).read_text()
    history = json.loads(text, parse_constant=lambda name: pytest.fail(f"history.json holds {name}"))
    assert history[0]["best/score"] is None  # warm-up epoch 0: no eligible score yet


def test_a_run_trained_on_cuda_evaluates_on_a_cpu_only_machine(toy_dataset, store, tmp_path):
    """The checkpoint of a CUDA run says device=cuda; --device (default auto) is this machine's choice."""
    import torch
    from mlflow.tracking import MlflowClient

    from galaxy_da.checkpoint import save_checkpoint
    from galaxy_da.tracking import load_run_checkpoint

    cfg = load_config(None, [f"data.path={toy_dataset}", *TINY, "device=cpu", f"tracking.tracking_uri={store}"])
    run_id = run_trial(cfg).run_id
    state = load_run_checkpoint(run_id, "best", store)
    state["config"]["device"] = "cuda"
    save_checkpoint(state, tmp_path / "best.pt")
    MlflowClient(store).log_artifact(run_id, str(tmp_path / "best.pt"), "checkpoints")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            run_eval.evaluate_run(run_id, store, log=False, device="cuda")
    for device in ("auto", "cpu"):
        assert run_eval.main(["--run-id", run_id, "--tracking-uri", store, "--device", device, "--no-log"]) == 0
