"""Configuration errors a person can act on: the dotted key, the nearest valid key, and where it came from.

A validation problem becomes one line ``<origin>: <dotted.key>: <what is wrong>``:

- the origin is the override that set the key (``override align.topkk=3``) when one
  did, else the YAML file (or ``defaults``), so a command-line typo is never blamed
  on the file;
- an unknown key gets the closest known key of its section (:func:`difflib.get_close_matches`):
  ``align.topkk: unknown key; did you mean align.topk?``; one spelled like a key
  that a command-line flag sets (a field declared with ``json_schema_extra={"flag": ...}``)
  gets that key and the flag: ``tracking.uri: unknown key; did you mean
  tracking.tracking_uri or the --tracking-uri flag?``.
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


def flags_of(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """``{dotted key: command-line flag}`` of every field of ``model`` declared with ``json_schema_extra={"flag": ...}``."""
    flags: dict[str, str] = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if "flag" in extra:
            flags[prefix + name] = str(extra["flag"])
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            flags.update(flags_of(field.annotation, f"{prefix}{name}."))
    return flags


def _spelling(name: str) -> str:
    """``tracking.uri``, ``tracking-uri`` and ``--tracking-uri`` all read ``tracking_uri``."""
    return name.lower().lstrip("-").replace("-", "_").replace(".", "_")


def unknown_key(parts: list[str], model: type[BaseModel]) -> str:
    """``"<path>: unknown key"`` and a hint: the key with a flag and that flag when ``path`` is spelled like them,
    else the closest key of its section."""
    path, section = ".".join(parts), ".".join(parts[:-1])
    for key, flag in flags_of(model).items():
        if difflib.get_close_matches(_spelling(path), [_spelling(key), _spelling(flag)], n=1, cutoff=0.8):
            return f"{path}: unknown key; did you mean {key} or the {flag} flag?"
    return f"{path}: unknown key" + did_you_mean(parts[-1], section_fields(model, parts[:-1]), f"{section}." if section else "")


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
        return path, unknown_key(parts, model)
    for bound, word in BOUNDS:
        if bound in ctx:
            return path, f"{path}: must be {word} {ctx[bound]}, got {got!r}"
    message = error["msg"].removeprefix("Value error, ")
    yaml_note = " (YAML reads yes/no/on/off/true/false as booleans)" if kind == "literal_error" and isinstance(got, bool) else ""
    return path, f"{path}: {message}" + ("" if kind == "value_error" else f", got {got!r}{yaml_note}")


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
