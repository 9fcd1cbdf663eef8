"""A sweep's saved view in the MLflow UI (galaxy_da/sweep/ui_view.py): what it shows, on a real sqlite store.

The browser's side (the view opening as written, in model-training mode) is checked by
bench/ui_screenshots.py in headless Chromium: tests/test_topk_smoke.py.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from galaxy_da.sweep.space import varied_keys
from galaxy_da.sweep.ui_view import (
    COMPARISON_METRICS, RUN_NAME_COLUMN, SAVED_VIEW_TAG_PREFIX, SCORE, TAG_VALUE_LIMIT, chart_cards, column, read_envelope,
    save_sweep_view, sweep_view_state, sweep_view_url,
)

ROOT = Path(__file__).resolve().parents[1]
TOPK = runpy.run_path(str(ROOT / "sweeps" / "topk.py"), run_name="topk")["SPACE"]
DIAGNOSTICS = {"lr", "train/loss", "step/loss", "step/grad_norm", "schedule/blur", "src_val/acc", "select/entropy"}


def test_the_parallel_coordinates_axes_are_the_params_that_vary():
    assert varied_keys(TOPK) == ["align.topk", "schedules.align_weight.kind", "align.method"]
    assert varied_keys({"optim.lr": {"loguniform": [1e-4, 1e-2]}, "model.width": {"choice": [8]}}) == ["optim.lr"]


def test_a_sweep_view_lists_its_trials_best_first_with_the_comparison_columns():
    state = sweep_view_state("p" * 32, "src_val", varied_keys(TOPK))
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{'p' * 32}'"  # the trials, not the parent run
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best/score`", False)
    assert state["selectedColumns"][:2] == ["metrics.`best/score`", "tags.`selection_rule`"]
    assert {column("metrics", metric) for metric in COMPARISON_METRICS} <= set(state["selectedColumns"])
    assert state["columnOrder"][0] == RUN_NAME_COLUMN and state["columnWidths"][RUN_NAME_COLUMN] >= 200  # sized only when ordered
    assert state["runsHiddenMode"] == "SHOW_ALL"  # MLflow's default charts only the first 10 runs


def test_the_chart_view_shows_the_comparison_and_holds_a_hidden_card_for_every_other_metric():
    logged = DIAGNOSTICS | {SCORE, "select/src_val", "best/epoch"}
    cards = chart_cards(varied_keys(TOPK), "src_val", logged, "section")
    shown = [card for card in cards if not card["deleted"]]
    assert [card["type"] for card in shown][:3] == ["PARALLEL", "BAR", "LINE"]
    assert shown[0]["selectedParams"] == varied_keys(TOPK) and shown[0]["selectedMetrics"] == [SCORE]
    assert {card.get("metricKey") for card in shown[1:]} == {SCORE, "select/src_val", *COMPARISON_METRICS}
    hidden = {card["metricKey"] for card in cards if card["deleted"]}
    assert hidden == DIAGNOSTICS | {"best/epoch"}  # MLflow adds a card for any logged metric that has none
    assert {card["metricSectionId"] for card in cards} == {"section"}


def test_the_view_round_trips_through_a_real_store_and_a_rerun_rewrites_it(tmp_path):
    from galaxy_da.tracking import ensure_experiment, mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    experiment = ensure_experiment(client, "smoke-sweeps", uri)
    parents = [client.create_run(experiment, run_name="sweep-topk-smoke").info.run_id for _ in range(2)]
    assert sweep_view_url(client, parents[0], "topk-smoke") is None  # no view written yet
    keys = [save_sweep_view(client, experiment, "topk-smoke", parent, "src_val", TOPK, DIAGNOSTICS) for parent in parents]
    assert keys[0] == keys[1]  # a smoke sweep run again replaces its view
    tags = {k: v for k, v in client.get_experiment(experiment).tags.items() if k.startswith(SAVED_VIEW_TAG_PREFIX)}
    assert list(tags) == [SAVED_VIEW_TAG_PREFIX + keys[0]]
    name, state = read_envelope(tags[SAVED_VIEW_TAG_PREFIX + keys[0]])
    assert name == "sweep topk-smoke" and parents[1] in state["searchFilter"]
    envelope = json.loads(tags[SAVED_VIEW_TAG_PREFIX + keys[0]])
    assert envelope["state"].startswith("deflate;") and isinstance(envelope["createdAt"], int)  # the UI's own format
    assert sweep_view_url(client, parents[1], "topk-smoke") == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?viewStateShareKey={keys[0]}&workflowType=machine_learning")


def test_a_view_too_large_for_a_tag_keeps_its_comparison_and_drops_the_hidden_cards(tmp_path):
    import hashlib

    from galaxy_da.tracking import ensure_experiment, mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    experiment = ensure_experiment(client, "big", uri)
    parent = client.create_run(experiment).info.run_id
    many = {f"diag/{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(2000)}  # incompressible names
    key = save_sweep_view(client, experiment, "big", parent, "src_val", TOPK, many)
    value = client.get_experiment(experiment).tags[SAVED_VIEW_TAG_PREFIX + key]
    assert len(value) <= TAG_VALUE_LIMIT
    cards = read_envelope(value)[1]["compareRunCharts"]
    assert cards and not any(card["deleted"] for card in cards)
