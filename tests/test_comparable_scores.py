"""What a sweep may rank against what: one label-free rule, and scores within one target survey."""

from __future__ import annotations

import pytest

from galaxy_da.config import ConfigError, TrialConfig
from galaxy_da.sweep import space as search_space


@pytest.mark.parametrize("space", [{"selection.rule": {"grid": ["src_val", "entropy"]}},
                                   {"selection": {"grid": {"a": {"rule": "entropy", "patience": 2}, "b": {"patience": 3}}}}])
def test_a_space_may_not_vary_the_selection_rule_by_which_the_sweep_ranks_its_trials(space):
    with pytest.raises(ConfigError, match=r"search space selection(\.rule)?: selection\.rule cannot vary within a sweep: .*select/<rule>"):
        search_space.check_space(TrialConfig().model_dump(mode="json"), space)
    search_space.check_space(TrialConfig().model_dump(mode="json"), {"selection.patience": {"grid": [2, 3]}})  # other selection keys may


def test_trials_on_different_target_surveys_are_never_ranked_against_each_other_by_a_scheduler():
    from galaxy_da.sweep.schedulers import check_scheduler
    from galaxy_da.sweep.settings import SweepSettings

    base = TrialConfig().model_dump(mode="json")
    space = {"data.target": {"grid": ["sdss", "desi"]}, "optim.lr": {"grid": [1e-3, 2e-3]}}
    epochs = base["optim"]["epochs"]
    for pruning in (dict(scheduler="asha"), dict(scheduler="pbt", searcher="random")):
        with pytest.raises(ConfigError, match=r"varies data\.target over \['sdss', 'desi'\]: .* do not compare, so (asha|pbt) must not rank"):
            check_scheduler(base, SweepSettings(name="t", space=space, **pruning))
    check_scheduler(base, SweepSettings(name="t", space=space, grace_period=epochs))  # no pruning: nothing is ranked mid-sweep
    check_scheduler(base, SweepSettings(name="t", space={"optim.lr": {"grid": [1e-3, 2e-3]}}))  # one target: ASHA as usual


def test_a_sweep_over_target_surveys_picks_a_best_run_in_each():
    from galaxy_da.sweep.leaderboard import pick_key, sweep_picks

    rows = [{"run_id": "a", "score": 0.9, "data.target": "desi"}, {"run_id": "b", "score": 0.8, "data.target": "sdss"},
            {"run_id": "c", "score": 0.7, "data.target": "desi"}, {"run_id": "d", "score": float("nan"), "data.target": "sdss"}]
    assert {target: row["run_id"] for target, row in sweep_picks(rows).items()} == {"desi": "a", "sdss": "b"}
    assert {target: row["run_id"] for target, row in sweep_picks(rows[2:]).items()} == {"desi": "c"}  # sdss has no score
    one = [{"run_id": "a", "score": 0.9}, {"run_id": "b", "score": 0.95}]
    assert {target: row["run_id"] for target, row in sweep_picks(one).items()} == {"": "a"}  # rows come best first
    assert sweep_picks([{"run_id": "a", "score": float("nan")}]) == {}
    assert (pick_key("best_run_id", ""), pick_key("best_run_id", "desi")) == ("best_run_id", "best_run_id/desi")
