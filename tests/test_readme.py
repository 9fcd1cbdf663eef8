"""The README's commands work as written from the repository root, and its set-up stays `make demo` / `make test`."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.tracking import DEFAULT_STORE, ui_command

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
ENV_BIN = Path(sys.executable).parent  # the venv the tests run in: what `source .venv/bin/activate` puts on PATH


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def commands(text: str) -> list[str]:
    """Command lines of the fenced blocks in ``text``, comments and continuation lines dropped."""
    lines = []
    for block in re.findall(r"```\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip().rstrip("\\").strip()
            if command and not line.startswith(" "):
                lines.append(command)
    return lines


def test_set_up_is_make_demo_and_make_test():
    assert commands(section("Set up")) == ["make demo", "make test"]


def test_use_says_how_to_activate_before_the_first_command():
    use = section("Use")
    assert use.index("source .venv/bin/activate") < use.index("galaxy-da synth")


@pytest.mark.parametrize("command", commands(section("Use")), ids=lambda c: c[:40])
def test_every_command_of_use_resolves_once_the_venv_is_active(command):
    """Each program is a Makefile target, a file of the repository, or a program in the activated venv (or the system)."""
    program, *args = shlex.split(command.replace("<", "").replace(">", ""))
    if program == "source":
        assert (ROOT / args[0]).is_file() or (ENV_BIN / "activate").is_file()
    elif program == "make":
        assert args[0] in MAKE_TARGETS, f"make {args[0]}: no such target"
    elif program in ("python", "bash"):
        script = next((a for a in args if a.endswith((".py", ".sh"))), None)
        assert script is None or (ROOT / script).is_file(), script
    else:
        assert (ENV_BIN / program).is_file() or subprocess.run(["which", program], capture_output=True).returncode == 0, program


def test_make_ui_serves_the_project_store_with_the_venv_on_path():
    dry = subprocess.run(["make", "-n", "ui"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert 'PATH="' + str(ROOT / ".venv" / "bin") in dry and "mlflow/serve.sh" in dry
    assert "sqlite:///$here/mlflow.db" in (ROOT / "mlflow" / "serve.sh").read_text()


def test_the_demo_and_sweeps_point_at_make_ui_for_the_project_store():
    assert ui_command(f"sqlite:///{ROOT / DEFAULT_STORE / 'mlflow.db'}") == "make ui"
    other = ui_command("sqlite:////elsewhere/mlflow.db")
    assert other.endswith("mlflow ui --backend-store-uri sqlite:////elsewhere/mlflow.db") and Path(other.split()[0]).is_file()


def test_the_package_declares_its_license_as_an_spdx_string():
    """A table-valued ``project.license`` makes setuptools print a deprecation warning on every install (``make demo``)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project["license"], str) and project["license"] == "MIT"
