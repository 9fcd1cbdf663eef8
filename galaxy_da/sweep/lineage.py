"""Lineage of a population-based sweep: who copied whom, when, and the schedules they learned.

When PBT restores member B from member A's checkpoint, B records a *copy
event* — the epoch of the copied checkpoint, A's trial and run, a sha256 of the
copied weights, and each mutable knob before (A's value) and after (B's
perturbed value) — at once, as ``lineage/copy-<n>.json`` in B's run. Events also
live in the checkpoint (``Trainer.lineage``), so a member inherits its ancestors'
events along with their weights, and ``lineage.json`` in a finished member's run
is its whole ancestry.

After the copy B's run shows the knobs B now trains with (:func:`show_knobs_in_force`):
its name, ``config.yaml`` and tags (``sweep.<path>``, ``config_hash``, ``method``,
``topk``, ``schedule``, ``seed``, ...) are rewritten. MLflow params are write-once
(it refuses a changed value), so the params keep B's config at its start and
``pbt.copy-<n>/<key>`` params record each key whose value, from copy ``n`` on,
differs from it (``pbt.copy-<n>`` itself: the config hash in force): the config in
force is the start params overridden by the newest copy's. Epochs B re-trains (a copy of an older checkpoint) are logged
again, the newer point of a step being the one in force
(:meth:`~galaxy_da.tracking.RunTracker.relog_from`); B's own pre-copy points stay
in its run, its lineage's are in ``history.json``.

A member's *learned schedule* is the per-epoch value of each knob in force
(``schedule/align_weight`` = λ, ``schedule/blur``, ``schedule/topk``, ``lr``) along
its lineage: its history, which it also inherits with the weights.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from galaxy_da.epoch_numbers import shown

COPY_PARAM_PREFIX = "pbt.copy-"
SCHEDULE_KEYS = {"λ (alignment weight)": "schedule/align_weight", "blur": "schedule/blur", "top-k": "schedule/topk", "learning rate": "lr"}


def weights_sha256(state_dict: dict[str, Any]) -> str:
    """sha256 over the model's tensors in key order (names and raw bytes): equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def record_copy(trial, member: str, copied_from: dict[str, str], varied: dict[str, str]) -> dict[str, Any]:
    """Append the copy event to ``trial``'s lineage, log it to the member's run and tag the run; returns the event."""
    from galaxy_da.config import flatten

    trainer = trial.trainer
    before, after = flatten(trainer.restored_config or {}), trial.cfg.flat()
    knobs = {tag.split(".", 1)[1] for tag in varied}
    event = {
        "member": member, "epoch": trainer.next_epoch - 1,
        "from_trial": copied_from["trial_id"], "from_run": copied_from["run_id"],
        "weights_sha256": weights_sha256(trainer.model.state_dict()),
        "knobs": {path: {"before": before.get(path), "after": after.get(path)} for path in sorted(knobs) if path in after},
    }
    trainer.lineage.append(event)
    if trial.tracker is not None:
        copies = int(trial.tracker.client.get_run(trial.run_id).data.tags.get("pbt.copies", 0)) + 1
        trial.tracker.log_text(json.dumps(event, indent=1), f"lineage/copy-{copies}.json")
        trial.tracker.set_tags({"pbt.copied_from": event["from_trial"], "pbt.copied_at_epoch": str(event["epoch"]), "pbt.copies": str(copies)})
        show_knobs_in_force(trial, copies, varied)
        trial.tracker.relog_from(trainer.next_epoch)
    return event


def show_knobs_in_force(trial, copy: int, varied: dict[str, str]) -> None:
    """Name, ``config.yaml``, tags and ``pbt.copy-<copy>/`` params of the member's run: its config from this copy on."""
    from mlflow.entities import Param

    from galaxy_da.config import config_to_yaml
    from galaxy_da.tracking import config_params, describe_tags

    tracker, cfg = trial.tracker, trial.cfg
    start = {key: value for key, value in tracker.client.get_run(trial.run_id).data.params.items() if not key.startswith(COPY_PARAM_PREFIX)}
    changed = [Param(f"{COPY_PARAM_PREFIX}{copy}/{key}", value) for key, value in config_params(cfg).items() if start.get(key) != value]
    changed.append(Param(f"{COPY_PARAM_PREFIX}{copy}", cfg.hash()))  # marks the copy even when nothing differs from the start
    for first in range(0, len(changed), 100):  # MLflow takes at most 100 params per batch
        tracker.client.log_batch(trial.run_id, params=changed[first : first + 100])
    tracker.set_tags({**describe_tags(cfg), **varied})
    tracker.client.update_run(trial.run_id, name=cfg.tracking.run_name)
    tracker.log_text(config_to_yaml(cfg), "config.yaml")


def config_in_force(params: dict[str, str]) -> dict[str, str]:
    """A member's config in force, as run params: the start params overridden by the newest ``pbt.copy-<n>/`` params."""
    copies = sorted({int(key[len(COPY_PARAM_PREFIX):].split("/", 1)[0]) for key in params if key.startswith(COPY_PARAM_PREFIX)})
    start = {key: value for key, value in params.items() if not key.startswith(COPY_PARAM_PREFIX)}
    if not copies:
        return start
    newest = f"{COPY_PARAM_PREFIX}{copies[-1]}/"
    return start | {key[len(newest):]: value for key, value in params.items() if key.startswith(newest)}


def schedule_of(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{knob: [(epoch, value), ...]}``: the knobs in force along a member's lineage."""
    return {knob: [(r["epoch"], r[key]) for r in history if key in r] for knob, key in SCHEDULE_KEYS.items()}


def log_learned_schedule(trial, member: str) -> None:
    """A member's own learned-schedule plot (its per-epoch knob values are already its metrics)."""
    from galaxy_da.plots import save

    if trial.tracker is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        figure = plot_schedules({member: schedule_of(trial.trainer.history)}, f"learned schedule of member {member}")
        trial.tracker.log_artifact(save(figure, Path(tmp) / "learned_schedule.png"), "plots")


def member_schedules(client, runs: list) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{member label: {knob: [(epoch, value), ...]}}`` from each run's ``history.json``."""
    schedules = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            try:
                history = json.loads(Path(client.download_artifacts(run.info.run_id, "history.json", tmp)).read_text())
            except Exception:  # a member without a finished history (failed): nothing to plot
                continue
            label = run.data.tags.get("ray_trial_id", run.info.run_id[:8])
            schedules[label] = schedule_of(history)
    return schedules


def copy_events(client, runs: list) -> list[dict[str, Any]]:
    """Every copy event of the population (each logged by the member that copied), oldest first."""
    events = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            for artifact in client.list_artifacts(run.info.run_id, "lineage"):
                events.append(json.loads(Path(client.download_artifacts(run.info.run_id, artifact.path, tmp)).read_text()))
    return sorted(events, key=lambda e: (e["epoch"], e["member"]))


def lineage_markdown(events: list[dict[str, Any]]) -> str:
    """The copy events as a table; epochs as shown to a person (from 1, ``epoch_numbers.shown``)."""
    lines = ["| after epoch | member | copied from | knobs (before → after) |", "|---|---|---|---|"]
    for e in events:
        knobs = ", ".join(f"{k}: {v['before']} → {v['after']}" for k, v in e["knobs"].items())
        lines.append(f"| {shown(e['epoch'])} | {e['member']} | {e['from_trial']} | {knobs} |")
    return "\n".join(lines)


def plot_schedules(schedules: dict[str, dict[str, list[tuple[int, float]]]], title: str):
    """One panel per knob, one line per member: the schedules the population learned (epochs drawn from 1)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 6.5), constrained_layout=True)
    axes = fig.subplots(2, 2).ravel()
    for ax, knob in zip(axes, SCHEDULE_KEYS):
        for member, knobs in schedules.items():
            if knobs.get(knob):
                epochs, values = zip(*knobs[knob])
                ax.plot([shown(e) for e in epochs], values, marker="o", markersize=3, label=member)
        ax.set(title=knob, xlabel="epoch", yscale="log" if knob == "learning rate" else "linear")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def log_population(client, parent_run_id: str, runs: list) -> dict[str, Any]:
    """The population's lineage table and learned-schedule plot, into the parent run."""
    from galaxy_da.plots import save

    events, schedules = copy_events(client, runs), member_schedules(client, runs)
    client.log_text(parent_run_id, lineage_markdown(events), "population/lineage.md")
    client.log_text(parent_run_id, json.dumps(events, indent=1), "population/lineage.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = save(plot_schedules(schedules, f"learned schedules of {len(schedules)} members"), Path(tmp) / "learned_schedules.png")
        client.log_artifact(parent_run_id, str(path), "population")
    return {"events": events, "schedules": schedules}
