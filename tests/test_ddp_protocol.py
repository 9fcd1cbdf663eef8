"""A multi-worker trial's contract with Ray Train: no restarts behind the trial's back, messages tagged by kind."""

from __future__ import annotations

import pytest

from galaxy_da.config import load_config
from galaxy_da.sweep.ddp import ERROR, READY, RECORD, WorkerError, expect, message, torch_trainer


def test_ray_train_restarts_the_workers_neither_after_an_error_nor_after_a_preemption():
    cfg = load_config(None, {"resources.workers_per_trial": 2})
    trainer = torch_trainer(cfg, {}, use_gpu=False, cpus_per_worker=1, storage_path="/tmp/unused", name="policy")
    policy = trainer.run_config.failure_config
    assert (policy.max_failures, policy.max_preemption_failures) == (0, 0)  # -1 (Ray's default) retries a drained node forever


def test_a_restarted_worker_groups_first_message_is_a_clear_error_where_the_trial_waits_for_an_epoch():
    restarted = message(READY, state={}, workers=[])
    with pytest.raises(WorkerError, match=r"waited for a 'record' message .* got 'ready': the worker group started again"):
        expect(restarted, RECORD)


def test_messages_of_the_awaited_kind_pass_and_a_workers_error_is_raised_as_it_was():
    answer = message(RECORD, record={"epoch": 0}, state={}, files=None)
    assert expect(answer, RECORD) is answer
    with pytest.raises(WorkerError, match=r"^ValueError: bad shard$"):
        expect(message(ERROR, error="ValueError: bad shard"), RECORD)
    with pytest.raises(WorkerError, match=r"got 'str': not a message of this protocol"):
        expect("epoch", READY)
