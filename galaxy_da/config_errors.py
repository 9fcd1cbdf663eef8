"""Configuration errors a person can act on: the dotted key, the nearest valid key, and where it came from.

A validation problem becomes one line ``<origin>: <dotted.key>: <what is wrong>``:

- the origin is the override that set the key (``override align.topkk=3``) when one
  did, else the YAML file (or ``defaults``), so a command-line typo is never blamed
  on the file;
- an unknown key gets the closest known key of its section (:func:`difflib.get_close_matches`):
  ``align.topkk: unknown key; did you mean align.topk?``.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ValidationError

BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


class ConfigError(ValueError):
    """A configuration problem, phrased with the dotted key at fault."""


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean <prefix><closest>?"`` when a known name is close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def section_fields(model: type[BaseModel], parts: list[str]) -> list[str]:
    """The field names of the section at ``parts`` of ``model`` (empty if ``parts`` is not a section)."""
    for part in parts:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def describe(error: Mapping[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    """One pydantic error -> ``(dotted path, "path: problem")``."""
    parts = [str(part) for part in error["loc"] if not str(part).startswith("function-after")]
    path = ".".join(parts) or "<root>"
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        section = ".".join(parts[:-1])
        return path, f"{path}: unknown key" + did_you_mean(parts[-1], section_fields(model, parts[:-1]), f"{section}." if section else "")
    for bound, word in BOUNDS:
        if bound in ctx:
            return path, f"{path}: must be {word} {ctx[bound]}, got {got!r}"
    message = error["msg"].removeprefix("Value error, ")
    return path, f"{path}: {message}" + ("" if kind == "value_error" else f", got {got!r}")


def origin_of(path: str, overrides: Mapping[str, str], source: str) -> str:
    """The override that set ``path`` (or a key inside it, or the section holding it), else ``source``."""
    for key, origin in overrides.items():
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return origin
    return source


def invalid_configuration(exc: ValidationError, model: type[BaseModel], source: str, overrides: Mapping[str, str]) -> ConfigError:
    """Every problem of ``exc`` on its own line, prefixed with its origin; one line when there is one problem."""
    # Union members each report; the set keeps one message per distinct problem.
    problems = sorted({(origin_of(path, overrides, source), message) for path, message in (describe(e, model) for e in exc.errors())})
    lines = [f"{origin}: {message}" for origin, message in problems]
    if len(lines) == 1:
        return ConfigError(lines[0])
    return ConfigError(f"invalid configuration ({len(lines)} problems)\n  " + "\n  ".join(lines))
