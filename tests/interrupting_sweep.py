"""``sweeps/topk.py`` with a Ctrl-C (SIGINT to the driver) at one chosen moment of the sweep.

Not timed: a Tune callback in the driver sends the signal at the event itself,
so the moment is the same on every run and every machine. Tune's own SIGINT
handler then stops the sweep as it would for a user's Ctrl-C.

    python tests/interrupting_sweep.py MOMENT [sweeps/topk.py flags...]

MOMENT:
- ``before-first``: Tune's first step, before any trial has trained;
- ``inside-trial``: the first trial's first reported epoch, with epochs left;
- ``between-trials``: the end of the first trial (the next has not trained).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

import galaxy_da.sweep.tuner as tuner

ROOT = Path(__file__).resolve().parents[1]
MOMENTS = ("before-first", "inside-trial", "between-trials")


MOMENT_ENV = "GALAXY_DA_TEST_INTERRUPT_AT"  # read when the callback runs: Tune pickles its callbacks into
# tuner.pkl and `--resume` brings this class back; a resumed process has no such variable and is left alone
SENT_ENV = MOMENT_ENV + "_SENT"


class InterruptingProgress(tuner.TrialProgress):
    """The sweep's console callback, plus one SIGINT to this process at ``$GALAXY_DA_TEST_INTERRUPT_AT``."""

    def _interrupt(self, moment: str) -> None:
        if os.environ.get(MOMENT_ENV) == moment and not os.environ.get(SENT_ENV):
            os.environ[SENT_ENV] = "1"
            print(f"interrupting_sweep: SIGINT at {moment}", flush=True)
            os.kill(os.getpid(), signal.SIGINT)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self._interrupt("before-first")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        super().on_trial_result(iteration, trials, trial, result, **info)
        self._interrupt("inside-trial")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        super().on_trial_complete(iteration, trials, trial, **info)
        self._interrupt("between-trials")


if __name__ == "__main__":
    moment, sys.argv = sys.argv[1], [str(ROOT / "sweeps" / "topk.py"), *sys.argv[2:]]
    if moment not in MOMENTS:
        sys.exit(f"moment {moment!r}: choose from {MOMENTS}")
    os.environ[MOMENT_ENV] = moment
    tuner.TrialProgress = InterruptingProgress
    runpy.run_path(sys.argv[0], run_name="__main__")
