"""What a researcher opens in the MLflow UI to compare a sweep's trials: a model-training experiment and a saved view.

What MLflow 3.17's UI does, read off its bundle and checked in headless Chromium
(``bench/ui_screenshots.py``), and what follows here:

- **GenAI or model training.** Every page opens in the sidebar's workflow mode:
  the URL's ``workflowType`` (``genai`` | ``machine_learning``), else the
  browser's last choice of the sidebar's toggle (local storage), else GenAI
  (Traces, Sessions, Judges; a run's breadcrumb says "Evaluations"). The
  experiment tag ``mlflow.experimentKind`` does not change which mode opens, and
  nothing on the server does. Every experiment the project logs to is tagged
  ``custom_model_development`` (:func:`galaxy_da.tracking.ensure_experiment`; what
  MLflow itself reads to classify an experiment), and every link the project
  prints carries ``workflowType=machine_learning`` (:func:`view_url`); a page
  reached from there by a click (a run's page) drops the parameter, so it is in
  model-training mode once the toggle was set to "Model training" in that browser
  (it stays set).
- **Default columns.** The runs table shows Run Name, Created, Dataset, Duration,
  Source and Models, whatever was logged; no experiment or server setting changes
  that. A *saved view* does (the Views menu; an experiment tag
  ``mlflow.sharedViewState.<id>`` holding ``{"name", "createdAt", "state"}``):
  opened from the menu or its link (``?viewStateShareKey=<id>``) it sets the
  filter, sort, selected columns and their widths and the chart view's cards.
  :func:`save_sweep_view` writes one per sweep: its trials only (not the parent
  run, whose ``best/score`` repeated the winner's), best score first, the columns
  of :data:`COMPARISON_METRICS` and the rule, a Run Name column wide enough for
  the whole name. A plain link to the experiment still opens the defaults.
- **Charts.** The chart view adds a card for every metric it has none for, one
  section per name prefix. A hidden card counts as a card, so the view lists every
  metric the trials logged when it was written (:func:`chart_cards`): the
  comparison's cards shown in one section (a parallel-coordinates plot of the
  knobs that varied against the score, the score per trial, the rule's score per
  epoch, the target metrics), the rest (per-epoch and per-step diagnostics) hidden
  in it (a card's menu, or "Add chart", shows one again).
  A metric first logged later (``eval/...`` after ``galaxy-da eval``) gets its own
  card again, below the comparison.
- **The compare-runs page** (runs ticked, then Compare) is not part of a view: its
  parallel-coordinates plot starts with the first three params, alphabetically,
  that differ between the runs, and the first metric every run has, in the order
  the first run logged them. Trials log ``best/score`` first in every batch
  (:data:`galaxy_da.tracking.LEAD_METRICS`), so it starts with the score when a
  trial's first logged epoch was scored (no warm-up epochs), else with ``lr``.

The view is written when the sweep starts (its link works while it runs) and again
at its end, with the metrics its trials logged. MLflow is not imported here.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from typing import Any, Iterable, Optional

from galaxy_da.sweep.space import Space, varied_keys


def column(kind: str, key: str) -> str:
    """MLflow's canonical column key: ``metrics.`best/score```."""
    return f"{kind}.`{key}`"


SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
WORKFLOW = "machine_learning"
SCORE = "best/score"  # a trial's sweep score: its selection rule's best over the epochs it trained
RULE_TAG = "selection_rule"
COMPARISON_METRICS = (SCORE, "eval/tgt_test/macro_f1", "eval/tgt_test/acc", "eval/tgt_test/balanced_acc")
RUN_NAME_COLUMN = "attributes.`Run Name`"
# px, wide enough for the whole name of each (MLflow's default Run Name column cuts a nested run's name after ~16 characters)
COLUMN_WIDTHS = {RUN_NAME_COLUMN: 200, column("metrics", SCORE): 110, column("tags", RULE_TAG): 110,
                 **{column("metrics", metric): 7 * len(metric) + 12 for metric in COMPARISON_METRICS[1:]}}  # 7 px a header character
COMPARISON_SECTION = "comparison"
TAG_VALUE_LIMIT = 20_000  # characters of an experiment tag's value (MLflow's limit)
RUNS_SHOWN = 100  # runs a bar or parallel-coordinates card compares (MLflow's default: 10)


def view_id(experiment_id: str, sweep: str) -> str:
    """The same id for the same sweep in the same experiment, so a smoke sweep run again rewrites its view."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"galaxy-da/experiments/{experiment_id}/sweeps/{sweep}"))


def _card(kind: str, section: str, **fields: Any) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "type": kind, "metricSectionId": section, "deleted": False,
            "isGenerated": False, "runsCountToCompare": RUNS_SHOWN, **fields}


def _line(metric: str, section: str) -> dict[str, Any]:
    return _card("LINE", section, metricKey=metric, selectedMetricKeys=[metric], displayName=metric,
                 lineSmoothness=0, xAxisKey="step", xAxisScaleType="linear", scaleType="linear", useGlobalXaxisKey=True,
                 useGlobalLineSmoothing=True, yAxisKey="metric", yAxisExpressions=[], ignoreOutliers=False,
                 range={}, selectedXAxisMetricKey="")


def _bar(metric: str, section: str) -> dict[str, Any]:
    return _card("BAR", section, metricKey=metric, displayName=metric)


def _hidden(metric: str, section: str) -> dict[str, Any]:
    """A hidden card: the chart view makes none of its own for ``metric``."""
    return {"uuid": str(uuid.uuid4()), "type": "BAR", "metricSectionId": section, "metricKey": metric, "deleted": True, "isGenerated": False}


def chart_cards(params: list[str], rule: str, logged: Iterable[str], section: str) -> list[dict[str, Any]]:
    """The chart view's cards: the comparison's, then one hidden card per other logged metric.

    ``params`` are the run params that varied (the parallel-coordinates axes), ``rule`` the
    selection rule (its per-epoch score is the metric ``select/<rule>``).
    """
    shown = [
        _card("PARALLEL", section, selectedParams=params, selectedMetrics=[SCORE], displayName=f"what varied -> {SCORE}"),
        _bar(SCORE, section),
        _line(f"select/{rule}", section),
        *(_bar(metric, section) for metric in COMPARISON_METRICS[1:]),
    ]
    named = {SCORE, f"select/{rule}", *COMPARISON_METRICS}
    return shown + [_hidden(metric, section) for metric in sorted(set(logged) - named)]


def sweep_view_state(parent_run_id: str, rule: str, params: list[str], logged: Iterable[str] = ()) -> dict[str, Any]:
    """The runs page state of a sweep's view: MLflow's search facets and UI state keys (their names are MLflow's)."""
    section = str(uuid.uuid4())
    selected = [column("metrics", SCORE), column("tags", RULE_TAG), *(column("metrics", metric) for metric in COMPARISON_METRICS[1:])]
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": column("metrics", SCORE), "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        "selectedColumns": selected,
        "columnOrder": [RUN_NAME_COLUMN, *selected], "columnWidths": COLUMN_WIDTHS,  # MLflow sizes only listed columns
        "compareRunCharts": chart_cards(params, rule, logged, section),
        "compareRunSections": [{"uuid": section, "name": COMPARISON_SECTION, "display": True, "isReordered": False, "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True, "hideEmptyCharts": True, "runsHiddenMode": "SHOW_ALL",
        "viewMaximized": False, "runListHidden": False, "groupBy": None, "groupsExpanded": {},
        "useGroupedValuesInCharts": True, "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def envelope(name: str, state: dict[str, Any], now_ms: int) -> str:
    """A saved view's tag value as MLflow's UI writes it: ``{name, createdAt, updatedAt, state}``, the state
    ``deflate;`` + base64 of the zlib-compressed JSON."""
    packed = base64.b64encode(zlib.compress(json.dumps(state, separators=(",", ":")).encode())).decode("ascii")
    return json.dumps({"name": name, "createdAt": now_ms, "updatedAt": now_ms, "state": f"deflate;{packed}"}, separators=(",", ":"))


def read_envelope(value: str) -> tuple[str, dict[str, Any]]:
    """``(name, state)`` of a saved view's tag value (the inverse of :func:`envelope`)."""
    view = json.loads(value)
    state = view["state"]
    text = zlib.decompress(base64.b64decode(state.removeprefix("deflate;"))).decode() if state.startswith("deflate;") else state
    return view["name"], json.loads(text)


def save_sweep_view(client, experiment_id: str, sweep: str, parent_run_id: str, rule: str, space: Space,
                    logged: Iterable[str] = ()) -> str:
    """Write (or rewrite) the sweep's saved view, named ``sweep <name>``; returns the view id.

    A view too large for an experiment tag (:data:`TAG_VALUE_LIMIT`) keeps its comparison
    cards and drops the hidden ones.
    """
    now = int(time.time() * 1000)
    value = envelope(f"sweep {sweep}", sweep_view_state(parent_run_id, rule, varied_keys(space), logged), now)
    if len(value) > TAG_VALUE_LIMIT:
        value = envelope(f"sweep {sweep}", sweep_view_state(parent_run_id, rule, varied_keys(space)), now)
    key = view_id(experiment_id, sweep)
    client.set_experiment_tag(experiment_id, SAVED_VIEW_TAG_PREFIX + key, value)
    return key


def view_url(ui_base: str, experiment_id: str, key: str) -> str:
    """The link that opens the sweep's view in model-training mode: ``<ui>/#/experiments/<id>/runs?viewStateShareKey=...``."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&workflowType={WORKFLOW}"


def logged_metric_keys(client, parent_run_id: str, experiment_id: str) -> set[str]:
    """Every metric key the sweep's trials logged (their latest values' keys)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10000)
    return {key for run in runs for key in run.data.metrics}


def sweep_view_url(client, parent_run_id: str, sweep: str) -> Optional[str]:
    """The link to the sweep's saved view, on the UI of ``client``'s store (:func:`~galaxy_da.tracking.ui_address`); None without one."""
    from galaxy_da.tracking import ui_address

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    key = view_id(experiment_id, sweep)
    if SAVED_VIEW_TAG_PREFIX + key not in client.get_experiment(experiment_id).tags:
        return None
    return view_url(ui_address(client.tracking_uri), experiment_id, key)
