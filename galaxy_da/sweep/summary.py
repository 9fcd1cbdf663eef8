"""What a finished sweep prints: its leaderboard, then commands that still work afterwards.

The sweep's own MLflow server (:mod:`galaxy_da.sweep.tracking_server`) stops
with the sweep, so links to it are dead by the time anyone clicks them. The
summary names the store, the experiment and the run ids, and the commands that
open, evaluate and report them later. The last line is the JSON summary that
scripts read.
"""

from __future__ import annotations

from typing import Optional

from galaxy_da import strict_json
from galaxy_da.config import TrialConfig
from galaxy_da.sweep.leaderboard import sweep_picks, to_markdown
from galaxy_da.sweep.settings import SweepResult, SweepSettings
from galaxy_da.tracking import ui_command


def next_steps(result: SweepResult, experiment: str, parent_run_name: str, view: Optional[str] = None) -> str:
    """Three commands: open the UI on the store (and the sweep's view, its link ``view``), evaluate the best run, report the sweep."""
    lines = [f"look at the runs:   {ui_command(result.tracking_uri)}   (experiment {experiment!r}, parent run {parent_run_name!r})"]
    if view:
        lines.append(f"compare the trials: {view}   (the sweep's view, in the UI's Views menu)")
    for target, best in sweep_picks(result.leaderboard).items():  # one per target survey when the sweep varied it
        lines.append(f"evaluate the best{f' on {target}' if target else ''}:  python -m galaxy_da.eval --run-id {best['run_id']}")
    lines.append(f"report the sweep:   galaxy-da report --sweep {result.parent_run_id}")
    return "\n".join(lines)


def view_link(result: SweepResult, sweep: str) -> Optional[str]:
    """The link to the sweep's saved view (:mod:`galaxy_da.sweep.ui_view`) on the UI of its store, if the view was written."""
    from galaxy_da.sweep.ui_view import sweep_view_url
    from galaxy_da.tracking import mlflow_client

    return sweep_view_url(mlflow_client(result.tracking_uri), result.parent_run_id, sweep)


def print_summary(result: SweepResult, settings: SweepSettings, cfg: TrialConfig) -> None:
    print(f"\nleaderboard of sweep {settings.name} (MLflow parent run {result.parent_run_id}):\n")
    print(to_markdown(result.leaderboard, cfg.selection.rule))
    print(next_steps(result, cfg.tracking.experiment, settings.parent_run_name, view_link(result, settings.name)))
    print(strict_json.dumps({
        "sweep": settings.name, "parent_run_id": result.parent_run_id, "complete": result.complete,
        "trials": len(result.leaderboard), "best": result.leaderboard[0] if result.leaderboard else None,
        "tracking_uri": result.tracking_uri, "experiment_path": result.experiment_path,
    }, default=str))
