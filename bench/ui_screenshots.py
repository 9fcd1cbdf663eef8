"""The MLflow UI a researcher opens after a sweep, checked in headless Chromium, with screenshots.

    python bench/ui_screenshots.py                        # a 3-trial smoke sweep (sweeps/topk.py) into a fresh store, its best trial evaluated, then the checks
    python bench/ui_screenshots.py --store sqlite:////abs/mlflow.db --sweep topk-smoke    # an existing sweep, nothing run

A real MLflow server (:func:`galaxy_da.sweep.tracking_server.tracking_server`) serves
the store; Chromium opens it and these checks read the page's DOM:

1. ``table.png``: the sweep's view (the link the sweep prints) opens in model-training
   mode (the sidebar has Runs and Models, not Judges or Sessions), lists the sweep's
   trials and not its parent run, each name whole and leading with the method
   (:mod:`galaxy_da.sweep.naming`), and shows the score, rule and (once evaluated)
   target-metric columns inside the table; ``run_page.png``: a trial's page reached by a
   click, whose mode is recorded (the click drops ``workflowType``);
2. ``charts.png``: its chart view holds the comparison section only (no per-step or
   per-epoch diagnostics, no "No charts in this section"), a parallel-coordinates card among them;
3. ``default.png``: the experiment's plain runs page (no view), the parent run expanded:
   MLflow's default Run Name column shows each trial's method whole (measured: the
   column's width and the characters it shows are recorded);
4. ``compare.png``: MLflow's compare-runs page of the trials: its parallel-coordinates
   plot starts with ``best/score`` as its metric;
5. ``landing.png``: the link ``make ui`` prints (the experiments list with
   ``workflowType=machine_learning``) opens in model-training mode and lists the sweep's experiment;
6. ``plain_link.png``: the experiment's bare link in a fresh browser, recorded (not
   checked): MLflow 3.17 opens it in GenAI mode, which is why every printed link carries
   ``workflowType=machine_learning``; ``after_toggle.png``: the same link after one click
   on the sidebar's "Model training" opens in model-training mode (checked).

Measurements go to ``<out>/ui_checks.json``. Exit 0 when every check passed, 1 naming
the failed ones. Needs Chromium (``make ui-deps``: Debian's ``chromium``) and Playwright
(the ``test`` extra); the browser is never downloaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from galaxy_da.sweep.naming import name_order, value_label  # noqa: E402
from galaxy_da.sweep.space import Space, is_categorical, options  # noqa: E402
from galaxy_da.sweep.ui_view import COMPARISON_METRICS, COMPARISON_SECTION, RULE_TAG, SCORE, column  # noqa: E402

OUT = REPO / "bench" / "results" / "ui"
SWEEP = "ui-check"
VIEWPORT = {"width": 1920, "height": 1080}
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome")
STEADY_POLLS, STEADY_MS = 3, 250  # a page is steady when what a check reads is the same in 3 polls 250 ms apart
STEADY_TIMEOUT_S = 20  # then a check reads the page as it is and names what is missing
GENAI_ENTRIES = ("Judges", "Sessions")  # sidebar entries only GenAI mode has
MODE_ENTRIES = ("Model registry", "Prompts")  # outside an experiment, the sidebar's entry of model training, of GenAI: it has drawn its mode


def leading_labels(space: Space) -> set[str]:
    """What a trial's name may start with: the labels of the space's first path in name order (the method)."""
    first = name_order(space)[0]
    if not is_categorical(first, space[first]):
        raise SystemExit(f"the sweep's first name part {first!r} is not a choice; these checks need one")
    return {value_label(first, label) for label in options(first, space[first])}


def find_chromium(explicit: Optional[str] = None) -> Optional[str]:
    """The Chromium to drive: ``explicit``, else the first of :data:`CHROMIUMS` on PATH."""
    return explicit or next((path for name in CHROMIUMS if (path := shutil.which(name))), None)


# --------------------------------------------------------------------------- the store


def build_store(work: Path, data: Optional[str]) -> str:
    """Run a smoke sweep named :data:`SWEEP` into ``work/mlflow.db`` and evaluate its best trial; the store's URI."""
    store = f"sqlite:///{work.resolve() / 'mlflow.db'}"
    sweep = [sys.executable, str(REPO / "sweeps" / "topk.py"), "--smoke-test", "--name", SWEEP, "--tracking-uri", store,
             "--storage-path", str(work / "ray"), "--num-cpus", "2", *(["--data", data] if data else [])]
    done = subprocess.run(sweep, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the smoke sweep failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    best = json.loads(done.stdout.strip().splitlines()[-1])["best"]["run_id"]
    evaluate = [sys.executable, "-m", "galaxy_da.eval", "--run-id", best, "--tracking-uri", store]
    done = subprocess.run(evaluate, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"evaluating {best} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return store


def sweep_runs(store: str, sweep: str) -> tuple[str, Any, list[Any]]:
    """``(experiment id, parent run, trial runs)`` of the newest sweep named ``sweep`` in ``store``."""
    from galaxy_da.tracking import mlflow_client

    client = mlflow_client(store)
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 f"tags.sweep = '{sweep}' and tags.run_kind = 'sweep'", order_by=["attributes.start_time DESC"])
    parents = [run for run in parents if run.data.tags.get("replaced") != "true"]
    if not parents:
        raise SystemExit(f"no sweep named {sweep!r} in {store}")
    parent = parents[0]
    trials = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent.info.experiment_id, parent, trials


# --------------------------------------------------------------------------- the checks


class Page:
    """One Chromium page on the UI at ``base``, screenshots into ``out``."""

    def __init__(self, browser, base: str, out: Path):
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page, self.base, self.out = self.context.new_page(), base, out

    def open(self, fragment: str, ready: str = ".ag-row") -> Any:
        """Go to ``<base>/#/<fragment>`` and wait for ``ready`` (a selector)."""
        self.page.goto(f"{self.base}/#/{fragment}")
        self.page.wait_for_selector(ready, timeout=60_000)
        return self.page

    def shoot(self, name: str) -> None:
        self.page.screenshot(path=str(self.out / name))


def settle(page, snapshot: str, ready: Callable[[Any], bool] = bool) -> None:
    """Wait until ``snapshot`` (a JS function; what a check or screenshot needs) gives a value that ``ready`` accepts
    and that stays the same over :data:`STEADY_POLLS` polls: MLflow renders a view's columns, widths and charts in
    passes after the first row shows. After :data:`STEADY_TIMEOUT_S` it returns anyway, so the check names what is missing."""
    seen: list[Any] = []
    deadline = time.monotonic() + STEADY_TIMEOUT_S
    while time.monotonic() < deadline:
        seen = [*seen[1 - STEADY_POLLS:], page.evaluate(snapshot)]
        if len(seen) == STEADY_POLLS and all(value == seen[0] for value in seen) and ready(seen[0]):
            return
        page.wait_for_timeout(STEADY_MS)


SIDEBAR = "() => document.querySelector('aside')?.innerText ?? ''"
MAIN_TEXT = "() => (document.querySelector('main') ?? document.body).innerText"


def sidebar_mode(page) -> str:
    text = page.locator("aside").first.inner_text()
    return "genai" if any(entry in text.split("\n") for entry in GENAI_ENTRIES) else "model training"


NAME_CELLS = """() => Array.from(document.querySelectorAll('.ag-row [col-id="attributes.`Run Name`"] a span')).map(span =>
    ({text: span.textContent, shown_px: span.clientWidth, needed_px: span.scrollWidth, font: getComputedStyle(span).font}))"""
TEXT_WIDTH = "([text, font]) => { const ctx = document.createElement('canvas').getContext('2d'); ctx.font = font; return ctx.measureText(text).width; }"
HEADERS = """() => { const grid = document.querySelector('.ag-root-wrapper').getBoundingClientRect().right;
    return Array.from(document.querySelectorAll('.ag-header-cell')).map(c => {
        const box = c.getBoundingClientRect(); return {id: c.getAttribute('col-id'), right: box.right, grid: grid}; }); }"""


def name_cells(page) -> list[dict[str, Any]]:
    """Every Run Name cell: its text, the pixels it shows and needs, and the pixels of its first part (the method)."""
    cells = page.evaluate(NAME_CELLS)
    for cell in cells:
        cell["leading"] = cell["text"].split("·", 1)[0]
        cell["leading_px"] = page.evaluate(TEXT_WIDTH, [cell["leading"], cell.pop("font")])
    return cells


def check_view_table(ui: Page, view: str, trials: list[Any], methods: set[str], evaluated: bool) -> dict[str, Any]:
    wanted = [column("metrics", SCORE), column("tags", RULE_TAG), *([column("metrics", m) for m in COMPARISON_METRICS[1:]] if evaluated else [])]
    page = ui.open(view)
    settle(page, f"() => [({NAME_CELLS})(), ({HEADERS})()]",
           lambda value: len(value[0]) == len(trials) and set(wanted) <= {header["id"] for header in value[1]})
    ui.shoot("table.png")
    cells, headers = name_cells(page), page.evaluate(HEADERS)
    shown = {h["id"] for h in headers if h["id"] and h["right"] <= h["grid"]}  # inside the table, not scrolled off
    names = sorted(run.info.run_name for run in trials)
    problems = []
    if sidebar_mode(page) != "model training":
        problems.append("the view opened in GenAI mode")
    if sorted(cell["text"] for cell in cells) != names:
        problems.append(f"rows {sorted(c['text'] for c in cells)} are not the trials {names}")
    problems += [f"{c['text']!r} is cut ({c['shown_px']} of {c['needed_px']} px)" for c in cells if c["needed_px"] > c["shown_px"]]
    problems += [f"{c['text']!r} does not lead with a method ({sorted(methods)})" for c in cells if c["leading"] not in methods]
    problems += [f"column {w} not shown in the table" for w in wanted if w not in shown]
    result = {"problems": problems, "mode": sidebar_mode(page), "rows": cells, "columns": sorted(shown)}
    page.locator('.ag-row [col-id="attributes.`Run Name`"] a').first.click()  # a click drops workflowType: recorded
    settle(page, "() => [location.hash, document.body.innerText]", lambda value: "/runs/" in value[0] and "Run ID" in value[1])
    ui.shoot("run_page.png")
    return result | {"run_page_mode": sidebar_mode(page)}


def check_view_charts(ui: Page, view: str) -> dict[str, Any]:
    page = ui.open(f"{view}&compareRunsMode=CHART", ready="text=" + COMPARISON_SECTION)
    settle(page, MAIN_TEXT, lambda text: "Parallel Coordinates" in text or "what varied" in text)
    ui.shoot("charts.png")
    text = page.locator("main").first.inner_text() if page.locator("main").count() else page.inner_text("body")
    sections = page.evaluate("() => Array.from(document.querySelectorAll('[data-testid*=\"section\"], h3, h4')).map(e => e.textContent.trim())")
    problems = []
    if "No charts in this section" in text:
        problems.append("an empty chart section is shown")
    if "Parallel Coordinates" not in text and "what varied" not in text:
        problems.append("no parallel-coordinates card")
    problems += [f"a diagnostics card {line!r} is shown" for line in text.split("\n") if line.startswith(("step/", "train/", "lr"))]
    return {"problems": problems, "sections": sections}


def check_default_column(ui: Page, experiment_id: str, parent_name: str, methods: set[str], n_trials: int) -> dict[str, Any]:
    page = ui.open(f"experiments/{experiment_id}/runs?workflowType=machine_learning")
    row = page.locator(".ag-row").filter(has_text=parent_name)
    row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    settle(page, NAME_CELLS, lambda cells: sum(cell["text"] != parent_name for cell in cells) >= n_trials)  # the parent expanded
    ui.shoot("default.png")
    trials = [cell for cell in name_cells(page) if cell["text"] != parent_name]
    problems = [f"the default column shows {c['shown_px']} px of {c['text']!r}, its method needs {c['leading_px']:.0f}"
                for c in trials if c["leading_px"] > c["shown_px"] or c["leading"] not in methods]
    return {"problems": problems, "rows": trials}


def check_compare_page(ui: Page, experiment_id: str, trials: list[Any]) -> dict[str, Any]:
    runs = json.dumps([run.info.run_id for run in trials])
    page = ui.open(f"compare-runs?runs={runs}&experiments={json.dumps([experiment_id])}", ready="text=Parallel Coordinates Plot")
    selected = ".du-bois-light-select-selection-item, [class*=select-selection-item]"
    settle(page, f"() => Array.from(document.querySelectorAll({json.dumps(selected)})).map(e => e.innerText)", lambda chosen: SCORE in chosen)
    ui.shoot("compare.png")
    chosen = page.locator(selected).all_inner_texts()
    problems = [] if SCORE in chosen else [f"the compare page's parallel-coordinates plot starts with {chosen}, not {SCORE}"]
    return {"problems": problems, "selected": chosen}


def check_landing(ui: Page, experiment: str) -> dict[str, Any]:
    page = ui.open("experiments?workflowType=machine_learning", ready=f"text={experiment}")
    settle(page, SIDEBAR, lambda text: any(entry in text for entry in MODE_ENTRIES))
    ui.shoot("landing.png")
    problems = [] if sidebar_mode(page) == "model training" else ["`make ui`'s link opened in GenAI mode"]
    return {"problems": problems, "mode": sidebar_mode(page), "url": page.url}


def check_plain_link_and_toggle(ui: Page, experiment_id: str) -> dict[str, Any]:
    """The bare link in a fresh browser (recorded), then after one click on the toggle's "Model training" (checked)."""
    page = ui.page
    page.goto(f"{ui.base}/#/experiments/{experiment_id}")
    settle(page, f"() => [({SIDEBAR})(), ({MAIN_TEXT})()]", lambda value: all(value))
    ui.shoot("plain_link.png")
    first = {"url": page.url, "mode": sidebar_mode(page)}
    for tour in page.get_by_role("button", name="Got it").all():  # GenAI mode's first-visit tip covers the page
        tour.click()
    page.locator("aside").get_by_text("Model training", exact=True).click()
    page.goto(f"{ui.base}/#/experiments/{experiment_id}")
    page.reload()
    settle(page, f"() => [({SIDEBAR})(), ({MAIN_TEXT})()]", lambda value: all(value))
    ui.shoot("after_toggle.png")
    problems = [] if sidebar_mode(page) == "model training" else ["after one click on Model training the bare link is still in GenAI mode"]
    return {"problems": problems, "first_visit": first, "after_toggle": {"url": page.url, "mode": sidebar_mode(page)}}


def run_checks(base: str, view: str, experiment: str, experiment_id: str, parent, trials: list[Any], methods: set[str], out: Path,
               chromium: str) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    evaluated = any(key.startswith("eval/") for run in trials for key in run.data.metrics)
    checks: dict[str, Callable[[Page], dict[str, Any]]] = {
        "view_table": lambda ui: check_view_table(ui, view, trials, methods, evaluated),
        "view_charts": lambda ui: check_view_charts(ui, view),
        "default_column": lambda ui: check_default_column(ui, experiment_id, parent.info.run_name, methods, len(trials)),
        "compare_page": lambda ui: check_compare_page(ui, experiment_id, trials),
        "landing": lambda ui: check_landing(ui, experiment),
        "plain_link": lambda ui: check_plain_link_and_toggle(ui, experiment_id),
    }
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for name, check in checks.items():  # each in a fresh context: nothing carried in local storage
                ui = Page(browser, base, out)
                try:
                    results[name] = check(ui)
                except Exception as exc:  # a page that never showed what a check waits for: that check failed
                    ui.shoot(f"{name}.failed.png")
                    results[name] = {"problems": [f"{type(exc).__name__}: {str(exc).splitlines()[0]}"]}
                finally:
                    ui.context.close()
        finally:
            browser.close()
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="an MLflow sqlite store holding the sweep (default: run a smoke sweep into --work)")
    parser.add_argument("--sweep", default=SWEEP, help="the sweep's name (default: %(default)s)")
    parser.add_argument("--data", help="dataset of the smoke sweep (default: the sweep script's own tiny one)")
    parser.add_argument("--work", type=Path, help="folder for the smoke sweep's store (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=OUT, help="screenshots and ui_checks.json (default: bench/results/ui)")
    parser.add_argument("--chromium", help=f"the browser to drive (default: the first of {', '.join(CHROMIUMS)} on PATH)")
    args = parser.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(f"ui_screenshots: no Chromium on PATH (looked for {', '.join(CHROMIUMS)}); `make ui-deps` installs Debian's", file=sys.stderr)
        return 2
    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.sweep.ui_view import SAVED_VIEW_TAG_PREFIX, view_id, view_url
    from galaxy_da.tracking import mlflow_client

    with tempfile.TemporaryDirectory(prefix="galaxy-da-ui-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store = args.store or build_store(work, args.data)
        experiment_id, parent, trials = sweep_runs(store, args.sweep)
        key = view_id(experiment_id, args.sweep)
        if SAVED_VIEW_TAG_PREFIX + key not in mlflow_client(store).get_experiment(experiment_id).tags:
            raise SystemExit(f"sweep {args.sweep!r} has no saved view in {store}")
        space = json.loads(Path(mlflow_client(store).download_artifacts(parent.info.run_id, "search_space.json", tmp)).read_text())
        methods = leading_labels(space)
        args.out.mkdir(parents=True, exist_ok=True)
        with tracking_server(store) as base:
            view = view_url(base, experiment_id, key).split("/#/", 1)[1]
            experiment = mlflow_client(store).get_experiment(experiment_id).name
            results = run_checks(base, view, experiment, experiment_id, parent, trials, methods, args.out, chromium)
    (args.out / "ui_checks.json").write_text(json.dumps({"store": store, "sweep": args.sweep, "checks": results}, indent=1, default=str))
    failed = {name: result["problems"] for name, result in results.items() if result["problems"]}
    for name, problems in failed.items():
        print(f"ui check {name} failed: {'; '.join(problems)}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} UI checks passed; screenshots and ui_checks.json in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
