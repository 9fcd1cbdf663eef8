"""The base of every config section: strict about keys, and YAML's boolean words stay words.

A :class:`Section` forbids unknown keys (a typo fails before any compute, with the
dotted path of the key at fault, :mod:`galaxy_da.config_errors`) and validates on
assignment. YAML 1.1 reads ``on``/``off``/``yes``/``no``/``true``/``false`` as
booleans; for an option whose allowed words include the word, the boolean becomes
that word again (``compute.compile=off``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

# YAML 1.1 (PyYAML) reads these words as booleans, in files and in overrides alike.
YAML_BOOLEAN_WORDS = {True: ("on", "yes", "true"), False: ("off", "no", "false")}


def literal_values(annotation: Any) -> tuple[Any, ...]:
    """Every value a ``Literal`` in ``annotation`` allows, through ``Optional``/``Union``: ``Optional[Literal["a", "b"]] -> ("a", "b")``."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(value for member in get_args(annotation) for value in literal_values(member))


class Section(BaseModel):
    """A config section: unknown keys are refused, assignments validated, YAML's boolean words kept as words."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _boolean_as_word(cls, value: Any, info: ValidationInfo) -> Any:
        """Give back the word YAML read as a boolean, for an option whose allowed words include it.

        ``compute.compile=off`` and ``compute: {compile: off}`` reach pydantic as
        ``False``; ``compile`` allows ``"off"``, so ``False`` becomes ``"off"``
        (``True`` becomes ``"on"``, ``"yes"`` or ``"true"``, whichever is allowed).
        """
        if not isinstance(value, bool):
            return value
        allowed = literal_values(cls.model_fields[info.field_name].annotation)
        return next((word for word in YAML_BOOLEAN_WORDS[value] if word in allowed), value)
