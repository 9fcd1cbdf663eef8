"""What the commands tell a person (issue 20, items 3-5): one way of numbering epochs, where outputs went, the next command.

Epochs are numbered from 1 wherever a person reads them and stay 0-based where
they are stored (:mod:`galaxy_da.epoch_numbers`). No test here trains or starts Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from galaxy_da import cli
from galaxy_da.config import load_config
from galaxy_da.selection import ORACLE, SELECTION_RULES

RECORD = {"train/loss": 0.9, "train/images_per_s": 500.0}


def three_epochs(*extra: str):
    return load_config(None, ["optim.epochs=3", "optim.warmup_epochs=1", *extra])


# --------------------------------------------------------------------------- galaxy-da train


def test_train_progress_numbers_epochs_from_one_and_marks_warmup():
    from galaxy_da.trial import format_record

    cfg = three_epochs()
    lines = [format_record({"epoch": epoch, **RECORD}, cfg) for epoch in range(3)]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "warm-up" in lines[0] and not any("warm-up" in line for line in lines[1:])


def test_train_ends_with_the_best_epoch_as_shown_where_it_was_logged_and_the_next_command():
    from galaxy_da.commands.train import closing_lines
    from galaxy_da.trial import TrialOutcome

    store = "sqlite:////tmp/store/mlflow.db"
    cfg = three_epochs(f"tracking.tracking_uri={store}", "tracking.experiment=mine")
    outcome = TrialOutcome("abc123", best_epoch=1, best_score=0.4843, history=[{}] * 3, checkpoint_dir=Path("."))
    lines = closing_lines(cfg, outcome, tracked=True)
    assert lines[0] == "trained 3 of 3 epochs; best src_val 0.4843 at epoch 2"  # the line printed as "epoch 2/3"
    assert lines[1].startswith("epoch 1 was warm-up (optim.warmup_epochs=1")
    assert lines[2] == f"logged to MLflow: run abc123, experiment 'mine', store {store}"
    assert json.loads(lines[3]) == {"run_id": "abc123", "best_epoch_index": 1, "best_score": 0.4843}  # stored: 0-based
    assert lines[-1].startswith(f"next: python -m galaxy_da.eval --run-id abc123 --tracking-uri {store}")


def test_untracked_training_says_so_and_names_two_warmup_epochs():
    from galaxy_da.commands.train import closing_lines
    from galaxy_da.trial import TrialOutcome

    cfg = load_config(None, ["optim.epochs=4", "optim.warmup_epochs=2"])
    lines = closing_lines(cfg, TrialOutcome(None, 3, 0.5, [{}] * 4, Path(".")), tracked=False, checkpoint_dir=Path("ckpt"))
    assert "at epoch 4" in lines[0] and lines[1].startswith("epochs 1-2 were warm-up")
    assert lines[2] == "not logged to MLflow (--no-track); checkpoints in ckpt" and lines[-1].startswith("next: ")


# --------------------------------------------------------------------------- sweeps


def fake_trial(trial_id: str, result: dict) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"align.topk": 5}, last_result=result)


def test_the_sweep_console_shows_the_best_epoch_as_its_progress_line_did(tmp_path, capsys):
    from galaxy_da.sweep.console import TrialProgress

    progress = TrialProgress({"align.topk": {"choice": [5]}}, "select/src_val", epochs=3, total=1, experiment_path=str(tmp_path))
    trial = fake_trial("t1", {"epochs_done": 3, "best/score": 0.4843, "best/epoch": 1})
    progress.on_trial_result(0, [], trial, {"epochs_done": 2, "select/src_val": 0.4843})  # epoch index 1
    progress.on_trial_complete(0, [], trial)
    during, end = capsys.readouterr().out.splitlines()
    assert "epoch 2/3  select/src_val 0.4843" in during and end.endswith("finished; best select/src_val 0.4843 (epoch 2)")


def test_the_sweep_leaderboard_numbers_the_best_epoch_from_one():
    from galaxy_da.sweep.leaderboard import to_markdown

    row = {"run": "k5", "status": "FINISHED", "epochs": 3, "best_epoch": 1, "score": 0.5, "run_id": "r1", "scored_on": ""}
    table = to_markdown([row], "src_val")
    assert "| 1 | k5 | FINISHED | 3 | 2 | 0.5000 | r1 |" in table and "numbered from 1" in table


def test_a_replaced_smoke_sweep_leaves_one_parent_run_of_its_name(tmp_path):
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.state import discard_smoke_sweep, write_sweep_state
    from galaxy_da.tracking import ensure_experiment, mlflow_client

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(store)
    settings = SweepSettings(name="topk-smoke", space={}, storage_path=str(tmp_path / "ray"), smoke=True)
    old = client.create_run(ensure_experiment(client, "smoke-sweeps", store), run_name=settings.parent_run_name).info.run_id
    client.set_terminated(old, "FINISHED")
    write_sweep_state(settings, {"parent_run_id": old, "smoke": True, "tracking_uri": store})
    assert discard_smoke_sweep(settings) == old
    run = client.get_run(old)
    assert run.info.run_name.startswith("sweep-topk-smoke (replaced ") and run.info.status == "FINISHED"
    assert run.data.tags["replaced"] == "true" and run.data.tags["replaced_at"] in run.info.run_name
    assert not (tmp_path / "ray" / "topk-smoke").exists()


def test_tunes_warning_about_trials_without_results_is_not_printed_but_other_failures_are(tmp_path):
    """Ray's own code path: ExperimentAnalysis._fetch_trial_dataframes over a trial without result.json or progress.csv."""
    import pyarrow.fs
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    import galaxy_da.sweep.console  # noqa: F401  (installs the filter)

    class Recorder(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    storage = SimpleNamespace(trial_fs_path=str(tmp_path), storage_filesystem=pyarrow.fs.LocalFileSystem())
    never_reported = SimpleNamespace(trial_id="a", last_result={"done": False}, storage=storage)
    analysis = SimpleNamespace(trials=[never_reported])
    analysis._fetch_trial_dataframe = lambda trial: ExperimentAnalysis._fetch_trial_dataframe(analysis, trial)
    logger, recorder = logging.getLogger("ray.tune.analysis.experiment_analysis"), Recorder()
    logger.addHandler(recorder)
    try:
        ExperimentAnalysis._fetch_trial_dataframes(analysis)
        assert recorder.messages == []
        (tmp_path / "result.json").write_text("{not json\n")  # a real failure is still reported
        ExperimentAnalysis._fetch_trial_dataframes(analysis)
        assert len(recorder.messages) == 1 and recorder.messages[0].startswith("Failed to fetch metrics")
    finally:
        logger.removeHandler(recorder)


# --------------------------------------------------------------------------- eval


def test_eval_titles_number_the_checkpoint_epoch_from_one():
    from galaxy_da.eval import Evaluation

    run = SimpleNamespace(run_name="k5", checkpoint="best", checkpoint_epoch=1)
    assert Evaluation(run, {}, "spiral", {}).title == "k5 (best.pt, epoch 2)"


def test_history_plots_draw_epochs_from_one():
    from galaxy_da.plots import plot_history

    history = [{"epoch": epoch, "train/loss": 1.0 / (epoch + 1)} for epoch in range(3)]
    (ax,) = plot_history(history, "run", marked_epoch=1, marked_label="best.pt (epoch 2)").axes
    curve, marker = ax.get_lines()
    assert list(curve.get_xdata()) == [1, 2, 3] and list(marker.get_xdata()) == [2, 2]


def test_the_pbt_lineage_table_and_schedule_plot_number_epochs_from_one():
    from galaxy_da.sweep.lineage import lineage_markdown, plot_schedules

    event = {"epoch": 0, "member": "b", "from_trial": "a", "knobs": {"align.weight": {"before": 1.0, "after": 1.2}}}
    assert lineage_markdown([event]).splitlines()[-1].startswith("| 1 | b | a |")
    figure = plot_schedules({"b": {"blur": [(0, 1.0), (1, 0.5), (2, 0.5)]}}, "learned")
    blur_panel = figure.axes[1]
    assert list(blur_panel.get_lines()[0].get_xdata()) == [1, 2, 3]


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_eval_says_where_its_plots_went_and_what_to_run_next(store):
    from galaxy_da.eval import closing_lines
    from galaxy_da.tracking import ensure_experiment, mlflow_client

    client = mlflow_client(store)
    experiment = ensure_experiment(client, "galaxy-da", store)
    parent = client.create_run(experiment).info.run_id
    child = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    alone = client.create_run(experiment).info.run_id
    args = argparse.Namespace(run_id=child, tracking_uri=store, json=None, no_log=False)
    lines = closing_lines(args)
    assert f"logged to run {child} in {store}" in lines[0] and "eval/plots/" in lines[0]
    assert lines[-1].startswith(f"next: galaxy-da report --sweep {parent} --tracking-uri {store}")
    lines = closing_lines(argparse.Namespace(run_id=alone, tracking_uri=store, json=None, no_log=False))
    assert lines[-1].startswith("next: ") and "mlflow ui --backend-store-uri" in lines[-1] and "eval/plots/" in lines[-1]


# --------------------------------------------------------------------------- report


def eval_metrics(score: float, oracle: float) -> dict[str, float]:
    metrics = {f"eval/select/{rule}": score for rule in SELECTION_RULES} | {f"eval/select/{ORACLE}": oracle}
    return metrics | {"eval/tgt_test/macro_f1": oracle, "eval/tgt_test/acc": oracle, "eval/tgt_test/balanced_acc": oracle, "eval/src_val/acc": 0.9}


@pytest.fixture
def fake_sweep(store):
    """A parent whose sweep picked run B; the full splits rank A first; C is not evaluated yet (the evaluation is faked)."""
    from galaxy_da.tracking import ensure_experiment, mlflow_client

    client = mlflow_client(store)
    experiment = ensure_experiment(client, "galaxy-da", store)
    parent = client.create_run(experiment, run_name="sweep-fake").info.run_id
    runs = {}
    for name, metrics in (("A", eval_metrics(0.9, 0.5)), ("B", eval_metrics(0.7, 0.6)), ("C", None)):
        runs[name] = client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": parent, "selection_rule": "src_val"}).info.run_id
        for key, value in (metrics or {}).items():
            client.log_metric(runs[name], key, value)
    client.set_tag(parent, "best_run_id", runs["B"])
    return parent, runs


@pytest.mark.parametrize("show", [False, True])
def test_report_prints_a_line_per_trial_and_both_picks_in_one_table(show, store, fake_sweep, monkeypatch, capsys):
    from galaxy_da import report

    parent, runs = fake_sweep
    echoes = []

    def fake_evaluate(run_id, tracking_uri=None, log=True, echo=True, **_):
        echoes.append(echo)
        if echo:
            print("selection scores of this checkpoint on the full splits (higher = better):")
        return eval_metrics(0.1, 0.2)

    monkeypatch.setattr(report, "evaluate_run", fake_evaluate)
    assert cli.main(["report", "--sweep", parent, "--tracking-uri", store, *(["--show-evaluations"] if show else [])]) == 0
    out = capsys.readouterr().out
    assert echoes == [show] and ("selection scores of this checkpoint" in out) == show
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("[")] == [
        "[1/3] A: evaluated before; target test macro-F1 0.5000 (ORACLE)",
        "[2/3] B: evaluated before; target test macro-F1 0.6000 (ORACLE)",
        "[3/3] C: evaluated; target test macro-F1 0.2000 (ORACLE)",
    ]
    assert f"| {runs['A']} | A | full-split pick |" in out and f"| {runs['B']} | B | sweep's pick |" in out
    assert f"The sweep's pick and the full-split pick differ: the sweep chose `B` ({runs['B'][:8]})" in out
    assert f"saved to the sweep's parent run {parent} under report/" in out
    assert lines[-1].startswith("next: ") and "report/" in lines[-1]
