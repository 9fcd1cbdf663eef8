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


@pytest.mark.slow
def test_a_trials_queues_live_on_the_trials_node_even_when_that_node_is_full():
    import ray
    from ray.cluster_utils import Cluster

    from galaxy_da.sweep.ray_start import retry_ray_startup

    # an idle head, where Ray would spill the queues; each node starts again if its raylet misses Ray's start-up window
    cluster = retry_ray_startup(lambda: Cluster(initialize_head=True, head_node_args={"num_cpus": 2}))
    retry_ray_startup(lambda: cluster.add_node(num_cpus=1, resources={"trial_node": 1}))
    ray.init(address=cluster.address)
    try:
        @ray.remote(num_cpus=1, resources={"trial_node": 1})  # the trial takes its node's only CPU
        class Trial:
            def open_queues(self, times: int) -> tuple[str, list[str]]:
                from galaxy_da.sweep.ddp import trial_queues

                self.queues = [queue for _ in range(times) for queue in trial_queues()]  # as the trial's successive runs would
                for queue in self.queues:
                    queue.qsize()  # the queue's actor is up
                return ray.get_runtime_context().get_node_id(), [queue.actor._actor_id.hex() for queue in self.queues]

        trial_node, queue_actors = ray.get(Trial.remote().open_queues.remote(3))
        placed = [ray._private.state.actors(actor_id=actor)["Address"]["NodeID"] for actor in queue_actors]
        assert placed == [trial_node] * 6
    finally:
        ray.shutdown()
        cluster.shutdown()
