"""Named training recipes: the ``align`` section of each method the quality benchmark compares.

A recipe is a mapping merged into the ``align`` section of a base config, so a
sweep can search over recipes by name (``{"align": {"grid": RECIPES}}``) and a
script can apply one with :func:`recipe_overrides`.
"""

from __future__ import annotations

from typing import Any

from galaxy_da.config import flatten

RECIPES: dict[str, dict[str, Any]] = {
    # focal loss + class weights on source only; no target batch is drawn
    "source_only": {"method": "none"},
    # gradient reversal into a domain discriminator (strength: schedules.grl)
    "dann": {"method": "dann"},
    # GeomLoss divergences between L2-normalised source and target features
    "sinkhorn": {"method": "sinkhorn"},
    "energy": {"method": "energy"},
    "laplacian": {"method": "laplacian"},
    # the reference's best recipe: Laplacian MMD, Kendall weights, entropy, top-k OT add-on
    "reference_recipe": {"method": "laplacian", "weighting": "trainable", "entropy_weight": 0.02, "ot": {"weight": 0.5}},
}
DISTANCE_RECIPES = ("sinkhorn", "energy", "laplacian")
TOPK_WEIGHT = 0.5


def with_topk(recipe: str) -> dict[str, Any]:
    """``recipe`` plus the OT top-k soft-matching add-on."""
    return {**RECIPES[recipe], "ot": {"weight": TOPK_WEIGHT}}


def untuned_recipes() -> dict[str, dict[str, Any]]:
    """Every recipe the quality table runs untuned: :data:`RECIPES` and each distance with the top-k OT add-on."""
    return {**RECIPES, **{f"{name}+topk_ot": with_topk(name) for name in DISTANCE_RECIPES}}


def recipe_overrides(section: dict[str, Any]) -> dict[str, Any]:
    """``{"method": "x", "ot": {"weight": 0.5}}`` -> ``{"align.method": "x", "align.ot.weight": 0.5}``."""
    return flatten(section, "align.")
