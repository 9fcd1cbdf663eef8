"""bench/sweep_efficiency.py at smoke size: both arms run, are kept in the job log, and a re-run reuses them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_sweep_efficiency_smoke_runs_its_whole_pipeline_and_resumes_from_its_job_log(smoke_out, tmp_path):
    out = smoke_out("efficiency")
    command = [sys.executable, str(ROOT / "bench" / "sweep_efficiency.py"), "--smoke", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    payload = json.loads((out / "sweep_efficiency.json").read_text())
    assert payload["smoke"] is True
    assert [(s["sweep"], s["seed"], s["order"]) for s in payload["sweeps"]] == [("random", 0, 1), ("optuna+asha", 0, 2)]
    for sweep in payload["sweeps"]:
        assert sweep["trials"] == {"random": 2, "optuna+asha": 3}[sweep["sweep"]]
        assert 0.0 < sweep["step_share"] < sweep["in_trial_share"] <= 1.0  # steps are part of the trials' time, not all of it
        assert len(sweep["load_average_before"]) == 3 and len(sweep["load_average_after"]) == 3
    random_search = payload["sweeps"][0]
    assert random_search["trial_epochs"] == 2 * 3 and random_search["time_to_random_best_s"] <= random_search["wall_s"]
    assert len(payload["asha_time_to_random_best_over_random_wall"]) == 1
    section = (out / "BENCHMARKS.md").read_text().split("<!-- study:sweep_efficiency -->", 1)[1].split("<!-- /study:sweep_efficiency -->", 1)[0]
    assert "| optuna+asha | 0 | 2 | 3 |" in section and "≥ 85 % of core-seconds" in section and "≤ 0.5×" in section
    assert (out / "sweep_efficiency.png").stat().st_size > 10_000
    logged = (out / "sweep_efficiency.jobs.jsonl").read_text().splitlines()
    assert len(logged) == 2
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert (out / "sweep_efficiency.jobs.jsonl").read_text().splitlines() == logged  # nothing re-run
    assert json.loads((out / "sweep_efficiency.json").read_text())["sweeps"] == payload["sweeps"]
