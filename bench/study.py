"""What every study (``bench/quality.py``, ``bench/label_shift_study.py``, ``bench/sweep_study.py``, ``bench/pbt_study.py``) shares.

- ``--smoke``: the whole pipeline of a study (jobs, sweep, analysis, JSON, the
  BENCHMARKS.md table and the plot) on a tiny rendered dataset and a three-epoch
  budget (:data:`SMOKE_OVERRIDES`), in a few minutes; the test suite runs it.
  A smoke writes into its own folder (``--out``, default a temporary one), its
  own MLflow store there, and a *copy* of BENCHMARKS.md, never the real one.
- :func:`write_section`: a study's table replaces the text between
  ``<!-- study:NAME -->`` and ``<!-- /study:NAME -->`` in BENCHMARKS.md, so a
  re-run updates its own section and nothing else.
- :class:`Outputs`: where a study's JSON, plots, job log and BENCHMARKS.md go.
- :func:`invocation_timings`, :func:`timing_text`, :func:`commands`: a job-log
  study's measured wall times across resumed invocations, and one reproducing
  ``galaxy-da train`` command per row; :func:`study_command`: the study's own
  command line as BENCHMARKS.md shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BENCHMARKS = REPO / "BENCHMARKS.md"

# A study's smoke: three epochs (one warm-up), two steps each, small batches; every path runs.
SMOKE_OVERRIDES: dict[str, Any] = {
    "optim.epochs": 3, "optim.warmup_epochs": 1, "optim.steps_per_epoch": 2,
    "data.batch_size": 16, "data.eval_batch_size": 128,
}
SMOKE_DATA = {"n_source": 240, "n_target": 200, "size": 33}


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--smoke``, ``--out`` and ``--benchmarks`` for every study."""
    parser.add_argument("--smoke", action="store_true",
                        help="the whole study on a tiny rendered dataset and a 3-epoch budget, in a few minutes (into --out, "
                             "default a temporary folder; BENCHMARKS.md is a copy there)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for {name}.json, its plots and job log (default: bench/results, or a temporary folder with --smoke)")
    parser.add_argument("--benchmarks", type=Path, default=None,
                        help="the BENCHMARKS.md whose study section is rewritten (default: the repository's; with --smoke a copy in --out)")


@dataclass
class Outputs:
    """A study's files: ``<out>/<name>.json``, ``<out>/<name>.jobs.jsonl``, plots beside them, and BENCHMARKS.md."""

    name: str
    folder: Path
    benchmarks: Path
    smoke: bool

    @property
    def json(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def jobs(self) -> Path:
        return self.folder / f"{self.name}.jobs.jsonl"

    def plot(self, suffix: str = "") -> Path:
        return self.folder / f"{self.name}{suffix}.png"

    def tracking_uri(self, default: str) -> str:
        """A smoke logs into its own sqlite store in ``folder``; a real study into ``default``."""
        return f"sqlite:///{(self.folder / 'mlflow' / 'mlflow.db').resolve()}" if self.smoke else default

    def write_json(self, payload: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        tmp.replace(self.json)
        return self.json


def outputs(args: argparse.Namespace, name: str) -> Outputs:
    """Resolve ``--out`` / ``--benchmarks`` for ``--smoke`` or a real run; MLflow's console noise off."""
    from galaxy_da.commands import QUIET_MLFLOW

    for key, value in QUIET_MLFLOW.items():
        os.environ.setdefault(key, value)
    folder = args.out or (Path(tempfile.mkdtemp(prefix=f"{name}-smoke-")) if args.smoke else RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = args.benchmarks
    if benchmarks is None:
        benchmarks = BENCHMARKS
        if args.smoke:
            benchmarks = folder / "BENCHMARKS.md"
            if not benchmarks.exists():
                shutil.copy2(BENCHMARKS, benchmarks)
    return Outputs(name, folder, benchmarks, args.smoke)


def smoke_dataset(folder: Path, targets: tuple[str, ...] = ("sdss",)) -> Path:
    """A tiny rendered dataset (``SMOKE_DATA``: the source and each survey of ``targets``) in ``folder/data``, rendered once."""
    from galaxy_da.data import synth

    data = folder / "data"
    if not (data / "manifest.json").is_file():
        synth.generate(data, seed=0, workers=1, progress=False, overwrite=True, targets=list(targets), **SMOKE_DATA)
    return data


def shown(path: Path) -> str:
    """``path`` as a reader of BENCHMARKS.md should see it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def parent_run(base, tracking_uri: str, name: str, seeds: list[int]):
    """The study's MLflow parent run on ``tracking_uri``: run name and ``sweep`` tag ``name``, its ``seeds`` as a tag."""
    from galaxy_da.tracking import RunTracker

    base.tracking.tracking_uri, base.tracking.run_name = tracking_uri, name
    return RunTracker(base, extra_tags={"sweep": name, "seeds": " ".join(map(str, seeds))})


def finished_jobs_kept(out: Outputs, fresh: bool) -> int:
    """How many finished jobs ``out.jobs`` already holds (an interrupted run continues from them); ``fresh`` empties it first."""
    if fresh:
        out.jobs.unlink(missing_ok=True)
    return len(out.jobs.read_text().splitlines()) if out.jobs.is_file() else 0


def smoke_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The budget overrides a smoke adds to every trial (none for a real run)."""
    return dict(SMOKE_OVERRIDES) if args.smoke else {}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- study:{name} -->", f"<!-- /study:{name} -->"


def write_section(benchmarks: Path, name: str, markdown: str) -> None:
    """Replace the text between ``name``'s markers in ``benchmarks`` (appended with its markers if absent)."""
    begin, end = markers(name)
    text = benchmarks.read_text() if benchmarks.exists() else ""
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    benchmarks.write_text(text)


def read_section(benchmarks: Path, name: str) -> str:
    """The text between ``name``'s markers ('' when the section is absent)."""
    begin, end = markers(name)
    text = benchmarks.read_text() if benchmarks.exists() else ""
    if begin not in text:
        return ""
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def invocation_timings(previous_json: Path, protocol: int, this: dict[str, Any]) -> list[dict[str, Any]]:
    """Every invocation's wall time and how many jobs it ran, oldest first: a re-run that only redraws the
    tables (its jobs all kept) must not replace the measured time of the runs that trained."""
    previous = json.loads(previous_json.read_text()) if previous_json.is_file() else {}
    if previous.get("protocol") != protocol:
        return [this]
    kept = previous.get("timings") or [{"command": previous["command"], "wall_seconds": previous["wall_seconds"], "jobs_run": len(previous["results"]),
                                        "load_average": previous["load_average"], "parent_run_id": previous["parent_run_id"]}]
    return kept + [this]


def shown_command(command: str) -> str:
    """``command`` with each absolute path inside the repository written relative to it (as :func:`shown`), whether a
    word of its own or the value of a ``key=/path`` override."""
    def shown_word(word: str) -> str:
        key, equals, value = word.rpartition("=")
        return f"{key}{equals}{shown(Path(value))}" if value.startswith("/") else word

    return " ".join(shown_word(word) for word in command.split(" "))


def study_command(script: str, argv: list[str]) -> str:
    """``python bench/SCRIPT ARGV...`` as typed, with repository paths relative (:func:`shown_command`)."""
    return shown_command(" ".join(["python", f"bench/{Path(script).name}", *argv]))


def timing_text(timings: list[dict[str, Any]], study_command: str) -> str:
    """``wall time 53.0 min for 85 jobs (load average 2.07 at its end; ...)``, one clause per invocation that ran jobs.

    An invocation whose command is not ``study_command`` (the one the section is headed by) is named in its clause.
    """
    ran = [t for t in timings if t["jobs_run"]] or timings[-1:]
    heading, clauses = shown_command(study_command), []
    for timing in ran:
        command = shown_command(timing["command"])
        by = "" if command == heading else f" run by `{command}`"
        clauses.append(f"wall time {timing['wall_seconds'] / 60:.1f} min for {timing['jobs_run']} jobs{by} "
                       f"(load average {timing['load_average'][0]:.2f} at its end; their MLflow parent run `{timing['parent_run_id']}`)")
    return "; ".join(clauses)


def commands(results: list[dict[str, Any]], order: list[str]) -> str:
    """One reproducing command per method (``seed=S`` for each seed listed)."""
    lines = []
    for method in order:
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["seed"])
        seeds = " ".join(str(r["seed"]) for r in rows)
        command = shown_command(rows[0]["command"].replace(f"seed={rows[0]['seed']}", "seed=S"))
        lines.append(f"- {method} (S in {seeds}): `{command}`")
    return "\n".join(lines)
