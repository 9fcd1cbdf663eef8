"""The MLflow UI a researcher opens after a sweep, in headless Chromium (bench/ui_screenshots.py).

A real 3-trial smoke sweep on the toy dataset, its best trial evaluated, a real MLflow
server, Debian's Chromium driven by Playwright. CI installs Chromium (`make ui-deps` in
.ci/run); elsewhere the test is skipped, saying so, when no Chromium or Playwright is there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ui_screenshots import CHROMIUMS, find_chromium  # noqa: E402

SHOTS = ("table.png", "run_page.png", "charts.png", "default.png", "compare.png", "landing.png", "plain_link.png", "after_toggle.png")


@pytest.mark.slow
def test_the_sweep_view_opens_on_the_comparison_in_model_training_mode(toy_dataset, tmp_path):
    pytest.importorskip("playwright", reason="Playwright is in the test extra: pip install -e '.[test]'")
    if find_chromium() is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(CHROMIUMS)}): `make ui-deps` installs Debian's (CI does)")
    out = tmp_path / "ui"
    command = [sys.executable, str(ROOT / "bench" / "ui_screenshots.py"), "--data", str(toy_dataset), "--work", str(tmp_path / "work"), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    checks = json.loads((out / "ui_checks.json").read_text())["checks"]
    assert checks["view_table"]["mode"] == "model training"
    table = checks["view_table"]
    assert "metrics.`best/score`" in table["columns"] and "tags.`selection_rule`" in table["columns"]
    assert "metrics.`eval/tgt_test/macro_f1`" in table["columns"]  # the best trial was evaluated
    assert len(table["rows"]) == 3 and all(row["needed_px"] <= row["shown_px"] for row in table["rows"])
    assert all((out / shot).stat().st_size > 10_000 for shot in SHOTS)
