"""How epochs are numbered: from 1 where a person reads them, from 0 where they are stored.

Printed or drawn for a person, epoch ``n`` is the n-th epoch trained, so a
3-epoch trial runs epochs 1, 2 and 3 ("epoch 2/3"), and a trial with
``optim.warmup_epochs=1`` warms up in epoch 1: the progress lines of
``galaxy-da train`` and of a sweep, their closing lines, the leaderboards' best
epoch, ``galaxy-da eval``'s titles and the epoch axes of every plot.

Stored, an epoch is its 0-based index, as the trainer counts it: a history
record's ``epoch``, the MLflow metric step of every per-epoch metric,
``best/epoch``, ``eval/checkpoint_epoch``, checkpoint files
(``scored/epoch-<k>.pt``), ``history.json``, leaderboard CSV files and the JSON
lines commands print for scripts (``best_epoch_index``). Epoch ``n`` on screen
is MLflow step ``n - 1``.
"""

from __future__ import annotations


def shown(index: int) -> int:
    """The number a person reads for the epoch of 0-based ``index``."""
    return index + 1


def warmup_note(warmup_epochs: int) -> str:
    """Which epochs warmed up, in shown numbers (``epoch 1 was``, ``epochs 1-2 were``); empty without warm-up."""
    if warmup_epochs <= 0:
        return ""
    epochs = f"epoch {shown(0)} was" if warmup_epochs == 1 else f"epochs {shown(0)}-{shown(warmup_epochs - 1)} were"
    return f"{epochs} warm-up (optim.warmup_epochs={warmup_epochs}: source labels only, no alignment, not scored)"
