"""How each domain's label table names its galaxies and image files: the source's layout and one per target survey."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from galaxy_da.data.schema import DEFAULT_TARGET

CLASS_COLUMN = "classification"


@dataclass(frozen=True)
class DomainLayout:
    """How one domain's label table names its galaxies and image files."""

    id_column: str
    image_file: Callable[[str], str]  # id value -> file name inside the image folder
    object_id: Callable[[str], str]  # id value -> dataset object_id
    dropped_columns: tuple[str, ...]  # label columns consumed into core columns
    renamed_columns: dict[str, str] = field(default_factory=dict)  # label column -> metadata column
    fixed_values: dict[str, str] = field(default_factory=dict)  # column -> the value every row must hold (else rejected)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return (self.id_column, CLASS_COLUMN, *self.fixed_values)


SOURCE_LAYOUT = DomainLayout(
    id_column="subhalo_id",
    image_file=lambda subhalo_id: f"subhalo_{subhalo_id}.png",
    object_id=lambda subhalo_id: f"tng50_{subhalo_id}",
    dropped_columns=(CLASS_COLUMN,),
    # the original code ignores this column and builds the path from subhalo_id
    renamed_columns={"image_path": "original_image_path"},
)
TARGET_LAYOUTS: dict[str, DomainLayout] = {  # keys: target surveys (galaxy_da.data.surveys.SURVEYS, data.target)
    "sdss": DomainLayout(
        id_column="subhalo_id",  # holds "<asset_id>.jpg", despite its name
        image_file=lambda file_name: file_name,
        object_id=lambda file_name: f"gz2_{Path(file_name).stem}",
        dropped_columns=(CLASS_COLUMN, "subhalo_id"),
    ),
    "desi": DomainLayout(
        id_column="subhalo_id",  # holds "<name>.png", despite its name
        image_file=lambda file_name: file_name,
        object_id=lambda file_name: f"desi_{Path(file_name).stem}",
        dropped_columns=(CLASS_COLUMN, "subhalo_id"),
        fixed_values={"dataset_name": "gz_desi"},
    ),
}


def detect_target_survey(columns: list[str]) -> str:
    """The target survey whose layout's fixed columns (``dataset_name``) the table has; ``DEFAULT_TARGET`` when none."""
    matches = [name for name, layout in TARGET_LAYOUTS.items() if layout.fixed_values and set(layout.fixed_values) <= set(columns)]
    return matches[0] if len(matches) == 1 else DEFAULT_TARGET
