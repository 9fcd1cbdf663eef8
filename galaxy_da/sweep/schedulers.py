"""Trial schedulers of a sweep, by name: ASHA prunes, PBT and PB2 learn schedules while trials train.

Every scheduler works on the trial's own epoch counter (``epochs_done``) and the
label-free selection score, and never judges a trial inside warm-up: warm-up
epochs are not reported to Tune at all (:func:`galaxy_da.train.is_scored_epoch`),
and ASHA's first rung and PBT's first perturbation come after them.

- ``asha``: asynchronous successive halving; an early stop is announced to the
  trial first (:mod:`galaxy_da.sweep.stops`), so the trial closes its run FINISHED.
- ``pbt``: population-based training. Every ``perturbation_interval`` epochs a
  member in the bottom ``quantile_fraction`` copies the weights, optimiser and
  step of one in the top fraction (exploit) and perturbs the mutable knobs
  (explore): numbers x0.8 or x1.2, choices to a neighbouring option, or a fresh
  draw with probability ``resample_probability``. Asynchronous by default (each
  member perturbs when it reaches the interval, judged against the others' latest
  scores); ``synchronous`` makes every member wait at the interval (Jaderberg et
  al. 2017, A.1), so a member that started late still gets compared and copied.
- ``pb2``: PBT whose explore step is a GP bandit over the continuous knobs
  (Parker-Holder et al. 2020), log-uniform ones in log10 coordinates; choices
  are left as they are.

The mutable knobs are the sweep's ``mutations`` (default: its whole search
space). Explored numbers never leave their declared interval
(:mod:`galaxy_da.sweep.explore`).
"""

from __future__ import annotations

from typing import Any, Callable

from galaxy_da.config import ConfigError
from galaxy_da.sweep import space as search_space
from galaxy_da.sweep.settings import SweepSettings
from galaxy_da.sweep.space import Space
from galaxy_da.sweep.stops import AnnouncingASHA

TIME_ATTR = "epochs_done"


def longest_warmup(base: dict[str, Any], settings: SweepSettings) -> int:
    return search_space.largest_value(base, settings.space, "optim.warmup_epochs")


def grace_period(base: dict[str, Any], settings: SweepSettings) -> int:
    """ASHA's first rung, in epochs: by default the first epoch after the longest warm-up in the space.

    A rung inside warm-up would compare trials before their alignment has run (a
    sweep judges what it varies only once it has had an effect), so an explicit
    grace period that short is refused.
    """
    warmup = longest_warmup(base, settings)
    if settings.grace_period is None:
        return warmup + 1
    if settings.grace_period <= warmup:
        raise ConfigError(
            f"grace period {settings.grace_period} would prune inside warm-up: trials warm up for {warmup} epoch(s), "
            f"so ASHA's first rung must come at epoch {warmup + 1} or later (--grace-period {warmup + 1})"
        )
    return settings.grace_period


def mutations(settings: SweepSettings) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: a Tune domain per number, the ordered option labels per choice.

    PBT perturbs a number by a factor and shifts a choice to a neighbouring
    option, so choices are given as lists (ordered as the sweep lists them).
    """
    space = mutation_space(settings)
    unknown = sorted(set(space) - set(settings.space))
    if unknown:
        raise ConfigError(f"mutations {unknown}: every mutable knob must also be in the search space {sorted(settings.space)}")
    domains = search_space.to_tune(space)
    return {path: list(search_space.options(path, spec)) if search_space.is_categorical(path, spec) else domains[path]
            for path, spec in space.items()}


def mutation_space(settings: SweepSettings) -> Space:
    """The knobs PBT/PB2 may change: the sweep's ``mutations``, else its whole search space."""
    return settings.mutations if settings.mutations is not None else settings.space


def continuous_knobs(settings: SweepSettings) -> list[str]:
    """The numeric knobs of the mutation space, the only ones PB2 explores."""
    knobs = [path for path, spec in mutation_space(settings).items() if not search_space.is_categorical(path, spec)]
    if not knobs:
        raise ConfigError("pb2 explores continuous knobs only: give the mutation space a uniform/loguniform/randint entry")
    return knobs


def _asha(base: dict[str, Any], settings: SweepSettings):
    return AnnouncingASHA(
        settings.experiment_path, time_attr=TIME_ATTR, max_t=base["optim"]["epochs"],
        grace_period=grace_period(base, settings), reduction_factor=settings.reduction_factor,
    )


def _pbt(base: dict[str, Any], settings: SweepSettings):
    from galaxy_da.sweep.explore import into_space
    from galaxy_da.sweep.sync_point import SteadyPBT

    return SteadyPBT(
        time_attr=TIME_ATTR, perturbation_interval=settings.perturbation_interval, hyperparam_mutations=mutations(settings),
        quantile_fraction=settings.quantile_fraction, resample_probability=settings.resample_probability,
        burn_in_period=longest_warmup(base, settings), custom_explore_fn=into_space(mutation_space(settings)),
        synch=settings.synchronous,
    )


def _pb2(base: dict[str, Any], settings: SweepSettings):
    from galaxy_da.sweep.explore import LogScaledPB2

    return LogScaledPB2(  # its numeric knobs (check_scheduler: at least one)
        mutation_space(settings), time_attr=TIME_ATTR, perturbation_interval=settings.perturbation_interval,
        quantile_fraction=settings.quantile_fraction, synch=settings.synchronous,
    )


SCHEDULERS: dict[str, Callable[[dict[str, Any], SweepSettings], Any]] = {"asha": _asha, "pbt": _pbt, "pb2": _pb2}
POPULATION_SCHEDULERS = ("pbt", "pb2")


def compares_trials(base: dict[str, Any], settings: SweepSettings) -> bool:
    """Whether the scheduler acts on one trial's score against another's: PBT/PB2 always, ASHA when it can cut
    before the last epoch (a grace period of ``optim.epochs`` is a sweep without pruning)."""
    return settings.scheduler in POPULATION_SCHEDULERS or grace_period(base, settings) < base["optim"]["epochs"]


def check_comparable_targets(base: dict[str, Any], settings: SweepSettings) -> None:
    """Refuse a scheduler that would rank trials of different target surveys against each other: every label-free
    score reads the target's unlabelled images, so scores on two surveys do not compare."""
    targets = search_space.values_of(base, settings.space, "data.target")
    if len(targets) > 1 and compares_trials(base, settings):
        raise ConfigError(f"search space varies data.target over {targets}: label-free scores on different target surveys do not "
                          f"compare, so {settings.scheduler} must not rank those trials against each other; sweep without pruning "
                          "(--grace-period 0), or run one sweep per target")


def check_scheduler(base: dict[str, Any], settings: SweepSettings) -> None:
    """Refuse a bad scheduler choice before anything starts."""
    if settings.scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler {settings.scheduler!r}: choose from {sorted(SCHEDULERS)}")
    check_comparable_targets(base, settings)
    if settings.scheduler == "asha":
        if settings.synchronous:
            raise ConfigError("--synchronous is a pbt/pb2 setting: asha has no perturbation points to wait at")
        grace_period(base, settings)
        return
    if settings.searcher != "random":
        raise ConfigError(f"scheduler {settings.scheduler!r} evolves its own population: use searcher='random' (got {settings.searcher!r})")
    if settings.perturbation_interval < 1:
        raise ConfigError(f"perturbation interval {settings.perturbation_interval}: must be >= 1 epoch")
    mutations(settings)  # every mutable knob is in the search space
    if settings.scheduler == "pb2":
        continuous_knobs(settings)


def build_scheduler(base: dict[str, Any], settings: SweepSettings):
    check_scheduler(base, settings)
    return SCHEDULERS[settings.scheduler](base, settings)
