"""What a newcomer trips on first: help for every flag, the demo's closing lines, the README's examples,
plot axes, a hint for a key that is a flag, and command modules imported only by the dispatcher."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.cli import COMMANDS
from galaxy_da.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"galaxy-da {name}")
    importlib.import_module(COMMANDS[name][1]).configure(parser)
    return parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_of_every_command_says_what_it_does(name):
    silent = [action.option_strings or action.dest for action in command_parser(name)._actions if not action.help]
    assert silent == [], f"galaxy-da {name} --help: no help for {silent}"


@pytest.mark.parametrize("name", [name for name in sorted(COMMANDS) if name in ("train", "eval", "report")])
def test_every_tracking_uri_flag_says_the_same(name):
    from galaxy_da.tracking import TRACKING_URI_HELP

    flags = {flag: action.help for action in command_parser(name)._actions for flag in action.option_strings}
    assert flags["--tracking-uri"] == TRACKING_URI_HELP


def module_level_imports(path: Path) -> set[str]:
    """Modules that ``path`` imports when it is imported (its top-level statements, not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_only_the_dispatcher_imports_the_command_modules():
    package = ROOT / "galaxy_da"
    outside = [path for path in package.rglob("*.py") if path != package / "cli.py" and "commands" not in path.relative_to(package).parts]
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in module_level_imports(path) if name.startswith("galaxy_da.commands"))
        for path in outside
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def fake_sweep_command(tracking_uri: str, status: int) -> list[str]:
    """A stand-in for ``sweeps/topk.py --smoke-test``: a real parent run, the real closing lines of a sweep, then exit ``status``."""
    code = (
        "from galaxy_da.config import TrialConfig\n"
        "from galaxy_da.sweep.settings import SweepResult, SweepSettings\n"
        "from galaxy_da.sweep.summary import print_summary\n"
        "from galaxy_da.tracking import mlflow_client\n"
        f"client = mlflow_client({tracking_uri!r})\n"
        "experiment = client.get_experiment_by_name('demo-stand-in') or client.get_experiment(client.create_experiment('demo-stand-in'))\n"
        "parent = client.create_run(experiment.experiment_id, run_name='demo-topk-x').info.run_id\n"
        "print('trial 1 of 3 started: k5·linear-0-0.5·sinkhorn+topk')\n"
        "settings = SweepSettings(name='demo-topk-x', space={})\n"
        f"print_summary(SweepResult(parent, '/tmp/ray/demo-topk-x', True, [], {tracking_uri!r}), settings, TrialConfig())\n"
        f"raise SystemExit({status})\n"
    )
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("status", [0, 130])
def test_the_demo_ends_with_one_make_ui_hint_and_no_json_line(status, toy_dataset, monkeypatch, capsys):
    from galaxy_da.commands import demo

    project_store = f"sqlite:///{ROOT / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setattr(demo, "sweep_command", lambda data, name: fake_sweep_command(project_store, status))
    args = command_parser("demo").parse_args(["--data", str(toy_dataset)])
    assert demo.run(args) == status
    out = capsys.readouterr().out
    assert "trial 1 of 3 started" in out and "report the sweep:" in out
    assert out.count("make ui") == 1, out
    assert not [line for line in out.splitlines() if line.lstrip().startswith("{")], out


def test_the_readme_run_name_is_the_one_a_topk_trial_gets():
    from galaxy_da.sweep.naming import trial_run_name

    space = runpy.run_path(str(ROOT / "sweeps" / "topk.py"), run_name="topk")["SPACE"]
    name = trial_run_name(space, {"align.topk": 5, "schedules.align_weight": "linear-0-0.5", "align": "sinkhorn+topk"})
    assert f"e.g. `{name}`" in README


def test_the_readme_preview_lands_where_git_ignores_it():
    (preview,) = re.findall(r"galaxy-da synth --preview (\S+)", README)
    ignored = subprocess.run(["git", "check-ignore", "-q", preview], cwd=ROOT)
    assert ignored.returncode == 0, f"{preview} would land untracked in the checkout"


def tick_labels(ax) -> list[str]:
    """The labels of the y ticks (major and minor) inside the view, as drawn."""
    ax.figure.canvas.draw()
    low, high = ax.get_ylim()
    labels = []
    for locations, formatter in ((ax.yaxis.get_majorticklocs(), ax.yaxis.get_major_formatter()),
                                 (ax.yaxis.get_minorticklocs(), ax.yaxis.get_minor_formatter())):
        formatter.set_locs(locations)
        labels += [formatter(value, index) for index, value in enumerate(locations) if low <= value <= high]
    return [label for label in labels if label]


def whole_ticks(axis, low: float, high: float) -> bool:
    locations = [value for value in axis.get_majorticklocs() if low <= value <= high]
    return bool(locations) and all(float(value).is_integer() for value in locations)


def history_panel(history: list[dict], title: str):
    from galaxy_da.plots import plot_history

    figure = plot_history(history, "run")
    figure.canvas.draw()
    return next(ax for ax in figure.axes if ax.get_title().startswith(title))


def test_epoch_axes_have_whole_ticks():
    ax = history_panel([{"epoch": epoch, "train/loss": 1.0 / (epoch + 1)} for epoch in range(3)], "losses")
    assert whole_ticks(ax.xaxis, *ax.get_xlim())


def test_trial_axes_have_whole_ticks():
    from galaxy_da.sweep.leaderboard import plot_sweep_scores

    rows = [{"order": order, "score": 0.5 + order / 10, "status": "FINISHED", "epochs": 3} for order in range(3)]
    figure = plot_sweep_scores(rows, "src_val", "sweep")
    figure.canvas.draw()
    (ax,) = figure.axes
    assert whole_ticks(ax.xaxis, *ax.get_xlim())


@pytest.mark.parametrize("errors", [[2.2206948e-06, 2.2206967e-06], [3.9287243e-08, 3.9287251e-08, 3.9287256e-08], [5e-7]])
def test_the_ot_error_axis_labels_each_tick_once(errors):
    history = [{"epoch": 0, "train/loss": 1.0}] + [
        {"epoch": epoch, "train/loss": 1.0, "align/topk_ot_marginal_error_max": error} for epoch, error in enumerate(errors, 1)
    ]
    labels = tick_labels(history_panel(history, "OT solver"))
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels


@pytest.mark.parametrize("key", ["tracking.uri", "tracking_uri", "tracking-uri"])
def test_a_key_spelled_like_a_flag_points_at_the_flag(key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=sqlite:///elsewhere.db"])
    assert str(info.value).endswith(f"{key}: unknown key; did you mean tracking.tracking_uri or the --tracking-uri flag?")


def test_a_typo_of_a_key_without_a_flag_gets_the_nearest_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["tracking.experimnt=x"])
    assert str(info.value).endswith("tracking.experimnt: unknown key; did you mean tracking.experiment?")
