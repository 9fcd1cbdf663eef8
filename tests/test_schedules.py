import math

import pytest

from galaxy_da.config import ScheduleConfig
from galaxy_da.schedules import SCHEDULES, schedule_progress, schedule_value

EPOCHS, WARMUP = 12, 2
LAST = EPOCHS - 1


def spec(kind: str, **fields) -> ScheduleConfig:
    return ScheduleConfig(kind=kind, **{"start": 2.0, "end": 0.5, **fields})


def test_progress_runs_from_warmup_end_to_last_epoch():
    assert schedule_progress(0, EPOCHS, WARMUP) == 0.0
    assert schedule_progress(WARMUP, EPOCHS, WARMUP) == 0.0
    assert schedule_progress(WARMUP + 1, EPOCHS, WARMUP) == pytest.approx(1 / 9)
    assert schedule_progress(LAST, EPOCHS, WARMUP) == 1.0
    assert schedule_progress(LAST + 5, EPOCHS, WARMUP) == 1.0
    assert schedule_progress(0, 1, 0) == 0.0  # one epoch: no division by zero


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine", "polynomial"])
def test_interpolating_schedules_hit_start_after_warmup_and_end_at_last_epoch(kind):
    s = spec(kind)
    expected_end = s.start if kind == "constant" else s.end
    assert schedule_value(s, 0, EPOCHS, WARMUP) == pytest.approx(s.start)  # during warm-up
    assert schedule_value(s, WARMUP, EPOCHS, WARMUP) == pytest.approx(s.start)
    assert schedule_value(s, LAST, EPOCHS, WARMUP) == pytest.approx(expected_end)


def test_midpoint_shapes_differ_as_their_formulas_say():
    mid = 0.5
    assert SCHEDULES["linear"](mid, spec("linear"), 0) == pytest.approx(1.25)
    assert SCHEDULES["cosine"](0.25, spec("cosine"), 0) == pytest.approx(2.0 - 1.5 * (1 - math.cos(math.pi / 4)) / 2)
    assert SCHEDULES["polynomial"](mid, spec("polynomial", power=3.0), 0) == pytest.approx(2.0 - 1.5 / 8)
    assert SCHEDULES["sigmoid"](mid, spec("sigmoid"), 0) == pytest.approx(1.25)


def test_sigmoid_ramps_close_to_its_ends():
    s = ScheduleConfig(kind="sigmoid", start=0.0, end=1.0, sharpness=10.0)
    assert schedule_value(s, WARMUP, EPOCHS, WARMUP) == pytest.approx(1 / (1 + math.exp(5)))
    assert schedule_value(s, LAST, EPOCHS, WARMUP) == pytest.approx(1 / (1 + math.exp(-5)))
    values = [schedule_value(s, e, EPOCHS, WARMUP) for e in range(WARMUP, EPOCHS)]
    assert values == sorted(values)


def test_exponential_counts_epochs_since_warmup():
    s = ScheduleConfig(kind="exponential", start=10.0, rate=0.95)
    assert schedule_value(s, 1, EPOCHS, WARMUP) == 10.0
    assert schedule_value(s, WARMUP + 3, EPOCHS, WARMUP) == pytest.approx(10.0 * 0.95**3)


def test_step_drops_every_step_every_epochs():
    s = ScheduleConfig(kind="step", start=1.0, step_every=4, step_factor=0.1)
    values = [schedule_value(s, e, 20, 0) for e in (0, 3, 4, 7, 8, 12)]
    assert values == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.001])


def test_floor_bounds_the_value_from_below():
    # the reference's blur schedule: 10 * 0.95**(e - 20), floored at 0.1 (reached near e = 110)
    s = ScheduleConfig(kind="exponential", start=10.0, rate=0.95, floor=0.1)
    assert schedule_value(s, 100, 200, 20) == pytest.approx(10.0 * 0.95**80)
    assert schedule_value(s, 150, 200, 20) == 0.1
    assert schedule_value(ScheduleConfig(kind="linear", start=1.0, end=0.0, floor=0.3), 9, 10, 0) == 0.3


def test_config_rejects_unknown_schedule_names():
    with pytest.raises(ValueError, match="unknown schedule"):
        ScheduleConfig(kind="wobbly")
    assert set(SCHEDULES) == {"constant", "linear", "cosine", "sigmoid", "step", "exponential", "polynomial"}


def test_align_weight_and_blur_scale_their_schedules():
    from galaxy_da.config import load_config
    from galaxy_da.train import epoch_knobs

    overrides = {"optim.epochs": 5, "optim.warmup_epochs": 1, "schedules.align_weight": {"kind": "linear", "start": 0.0, "end": 2.0},
                 "schedules.blur": {"kind": "constant", "start": 0.4, "end": 0.4}}
    plain = load_config(None, overrides)
    scaled = load_config(None, {**overrides, "align.weight": 3.0, "align.blur": 0.5})
    for epoch in range(5):
        a, b = epoch_knobs(plain, epoch), epoch_knobs(scaled, epoch)
        assert b.align_weight == pytest.approx(3.0 * a.align_weight)
        assert b.blur == pytest.approx(0.5 * a.blur)
    assert epoch_knobs(plain, 4).align_weight == pytest.approx(2.0)
