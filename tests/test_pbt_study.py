"""The PBT study (``bench/pbt_study.py``): fresh paired seeds, the sweep study's best configuration replayed, and its smoke."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_training_seeds_are_shared_by_the_arms_and_never_a_seed_that_chose_a_configuration(tmp_path):
    import pbt_study

    sweep_study = tmp_path / "sweep_study.json"
    sweep_study.write_text(json.dumps({"top": [], "fresh_seeds": [300, 301], "fresh": [{"seed": 300}, {"seed": 301}]}))
    used = pbt_study.seeds_used_to_choose(sweep_study)
    assert {0, 9, 100, 102, 300, 301} <= used  # the quality table's, the sweep study's, and what its JSON records
    args = pbt_study.parse(["--members", "4"])
    assert pbt_study.training_seeds(args, 1, used) == [204, 205, 206, 207]
    with pytest.raises(SystemExit, match=r"training seeds \[300, 301\] of study seed 25 were used to choose"):
        pbt_study.training_seeds(args, 25, used)


def test_the_best_fixed_schedule_replays_the_sweep_studys_top_overrides(tmp_path):
    import pbt_study

    sweep_study = tmp_path / "sweep_study.json"
    top = {"align.method": "laplacian", "align.weight": 0.7, "schedules.align_weight.kind": "linear", "seed": 0,
           "data.path": "data/quality", "tracking.experiment": "sweep-study", "selection.audit_rules": True}
    sweep_study.write_text(json.dumps({"top": [{"rank": 1, "varied": {"align.method": "laplacian", "align.weight": "0.7"}, "overrides": top}]}))
    source, overrides = pbt_study.best_fixed_schedule(sweep_study, smoke=False)
    assert overrides == {"align.method": "laplacian", "align.weight": 0.7, "schedules.align_weight.kind": "linear"}  # seed, data, tracking, audit: the study's
    assert "sweep study #1 (laplacian · 0.7" in source
    source, overrides = pbt_study.best_fixed_schedule(tmp_path / "absent.json", smoke=True)
    assert "smoke: no sweep study" in source and overrides["align.method"] == "laplacian"
    with pytest.raises(SystemExit, match="run bench/sweep_study.py first"):
        pbt_study.best_fixed_schedule(tmp_path / "absent.json", smoke=False)


def test_a_population_is_read_back_by_the_reports_own_columns(tmp_path):
    """Two finished members (one copied the other at epoch 1): the pick by the label-free rule, each member's start seed,
    knobs in force, epochs trained and the explore check come from the runs, keyed as galaxy-da report keys them."""
    import pbt_study
    from mlflow.tracking import MlflowClient

    from galaxy_da.config import load_config
    from galaxy_da.tracking import RunTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mutations = {"align.weight": {"loguniform": [0.1, 3.0]}}
    parent = RunTracker(load_config(None, {"tracking.experiment": "pbt-study"}), tracking_uri=uri)
    client = MlflowClient(uri)
    members = {}
    for trial, seed, weight, src_val, f1, trained in (("a", 200, 1.0, 0.9, 0.6, 3), ("b", 201, 0.5, 0.7, 0.8, 4)):
        cfg = load_config(None, {"tracking.experiment": "pbt-study", "seed": seed, "align.weight": weight})
        run = RunTracker(cfg, tracking_uri=uri, parent_run_id=parent.run_id, extra_tags={"ray_trial_id": trial})
        run.log_metrics({"eval/tgt_test/macro_f1": f1, "eval/select/oracle": f1, "eval/select/src_val": src_val})
        for epoch in range(trained):
            run.log_metrics({"compute/epochs_trained": epoch + 1}, step=min(epoch, 2))
        run.log_text(json.dumps([{"epoch": e, "schedule/align_weight": weight, "lr": 1e-3} for e in range(3)]), "history.json")
        members[trial] = run
    copy = {"member": "b", "epoch": 1, "from_trial": "a", "from_run": members["a"].run_id, "weights_sha256": "0",
            "knobs": {"align.weight": {"before": 1.0, "after": 1.2}, "seed": {"before": 200, "after": 200}}}
    members["b"].log_text(json.dumps(copy), "lineage/copy-1.json")
    client.log_param(members["b"].run_id, "pbt.copy-1/align.weight", "1.2")

    row = pbt_study.population_row(parent.run_id, uri, 0, [200, 201], mutations)
    assert row["rule"] == "src_val (full splits)" and row["chosen_member"] == "a" and row["f1"] == pytest.approx(0.6)
    by_trial = {m["member"]: m for m in row["members"]}
    assert by_trial["b"]["seed"] == 201 and by_trial["b"]["knobs_in_force"] == {"align.weight": "1.2"}  # started on 201, λ 1.2 since its copy
    assert by_trial["b"]["epochs_trained"] == 4 and row["trial_epochs"] == 7
    assert row["explored_outside_space"] == [] and row["copies"][0]["member"] == "b" and set(row["schedules"]) == {"a", "b"}
    with pytest.raises(SystemExit, match="expected"):  # a population that did not train the paired seeds is refused
        pbt_study.population_row(parent.run_id, uri, 0, [200, 202], mutations)


@pytest.mark.slow
def test_the_pbt_study_smoke_runs_its_whole_pipeline(smoke_out, tmp_path):
    """Population, hand-set arms, analysis, JSON, the BENCHMARKS section and the plot, on tiny data."""
    from mlflow.tracking import MlflowClient

    from study import read_section

    sweep_study = tmp_path / "sweep_study.json"
    top = {"align.method": "laplacian", "align.weight": 0.7, "align.ot.weight": 0.5, "seed": 0}
    sweep_study.write_text(json.dumps({"top": [{"rank": 1, "varied": {"align.weight": "0.7"}, "overrides": top}], "fresh_seeds": [100]}))
    out = smoke_out("out")
    command = [sys.executable, str(ROOT / "bench" / "pbt_study.py"), "--smoke", "--out", str(out), "--best-fixed-json", str(sweep_study),
               "--synchronous"]  # every member compared at each point: an exploit whatever the members' start times
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    payload = json.loads((out / "pbt_study.json").read_text())
    assert {"arms", "table", "baseline", "pbt_minus_baseline_points", "trial_epochs", "training_seeds", "seeds_used_to_choose",
            "best_fixed_from", "load_average", "wall_seconds"} <= set(payload)
    assert "PBT (pbt)" in read_section(out / "BENCHMARKS.md", "pbt_study")
    assert (out / "pbt_study.png").stat().st_size > 10_000

    seeds = payload["training_seeds"]["0"]
    assert len(seeds) == 2 and not set(seeds) & set(payload["seeds_used_to_choose"])
    for rows in payload["arms"].values():  # paired: trial i of every arm trains seed t_i
        assert [row["training_seeds"] for row in rows] == [seeds] and sorted(m["seed"] for m in rows[0]["members"]) == seeds
    best_fixed = payload["arms"]["best fixed schedule"][0]
    assert all("align.weight=0.7" in m["command"] and "align.method=laplacian" in m["command"] for m in best_fixed["members"])

    pbt = payload["arms"][payload["pbt_arm"]][0]
    client = MlflowClient(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    for member in pbt["members"]:  # every epoch a member trained is counted (and, re-trained or not, logged once per training)
        assert member["epochs_trained"] == len(client.get_metric_history(member["run_id"], "train/loss")) >= 1
    assert pbt["trial_epochs"] == sum(m["epochs_trained"] for m in pbt["members"]) == payload["trial_epochs"][payload["pbt_arm"]]
    for name in ("reference σ-schedule + trainable weights", "best fixed schedule"):
        assert payload["arms"][name][0]["trial_epochs"] == 2 * 6  # two runs of the smoke's 6 epochs

    space = runpy.run_path(str(ROOT / "sweeps" / "pbt_schedules.py"))["MUTATIONS"]
    bounds = {path: spec["loguniform"] for path, spec in space.items() if "loguniform" in spec}
    assert pbt["copies"], "the smoke's population saw no exploit: the copy, re-tag and explore checks would check nothing"
    assert pbt["explored_outside_space"] == []
    for path, (low, high) in bounds.items():  # every explored value, and every member's value in force, inside the space
        assert all(low <= event["knobs"][path]["after"] <= high for event in pbt["copies"])
        assert all(low <= float(member["knobs_in_force"][path]) <= high for member in pbt["members"])
