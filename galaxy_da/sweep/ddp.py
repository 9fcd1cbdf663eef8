"""A trial that spans W workers: Ray Train's ``TorchTrainer`` runs the trainer on each, one epoch per request.

:class:`DistributedTrainer` offers the :class:`~galaxy_da.train.Trainer` surface
that :class:`~galaxy_da.trial.TrackedTrial` and the Tune trainable drive
(``epochs()``, ``history``, ``finished``, ``next_epoch``, ``result()``,
``checkpoint_dir``), so a W-worker trial reports, checkpoints, resumes and is
pruned exactly like a one-worker trial:

- ``TorchTrainer.fit()`` runs in a thread of the trial's actor (the Train
  controller is an actor of its own; W workers with ``resources_per_worker``
  each, DDP over gloo on CPUs or NCCL on GPUs, see :mod:`galaxy_da.distributed`);
- each worker builds the same :class:`~galaxy_da.train.Trainer`; the lead
  (rank 0) takes a command from a queue and shares it with the others, so the
  workers train one epoch when the trial asks for one and never run ahead of
  the scheduler: a pruned trial stops at the epoch ASHA judged;
- the lead answers each epoch with its record, and after scored epochs with
  its ``last.pt``/``best.pt`` (through the object store), which land in the
  trial's folder, where Tune checkpoints them; a restored trial hands them back
  to every worker, which resumes exactly from them;
- a worker's error ends the run, and the trial fails with it (Tune retries it
  from its last checkpoint, as for any trial). Ray Train itself never restarts
  the workers (:func:`no_train_retries`): a restarted group would start afresh
  behind the trial's back, holding its W GPUs;
- every message is tagged by its kind (:data:`READY`, :data:`RECORD`,
  :data:`ERROR` from the lead; :data:`EPOCH`, :data:`STOP` to it), so a message
  the trial did not wait for is a clear :class:`WorkerError`, never a ``KeyError``;
- the two queues are actors pinned to the trial's node (:func:`trial_queues`).
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import ray
from ray.util.queue import Empty, Queue

from galaxy_da.checkpoint import BEST, LAST
from galaxy_da.config import TrialConfig, validate
from galaxy_da.train import TrainResult, is_scored_epoch

STOP, EPOCH = "stop", "epoch"  # commands, trial -> lead worker
READY, RECORD, ERROR = "ready", "record", "error"  # messages, lead worker -> trial
POLL_S = 0.5


class WorkerError(RuntimeError):
    """A worker of a multi-worker trial raised (the message is its ``Type: message``), or the workers broke the protocol."""


def message(kind: str, **body: Any) -> dict[str, Any]:
    """A message from the lead worker: ``{"kind": kind, **body}``."""
    return {"kind": kind, **body}


def expect(received: Any, kind: str) -> dict[str, Any]:
    """``received`` if it is a message of ``kind``; a worker's :data:`ERROR` raises it, any other kind raises :class:`WorkerError`."""
    got = received.get("kind") if isinstance(received, dict) else type(received).__name__
    if got == ERROR:
        raise WorkerError(received["error"])
    if got != kind:
        why = "the worker group started again (Ray Train retried it)" if got == READY else "not a message of this protocol"
        raise WorkerError(f"the trial waited for a {kind!r} message from its lead worker and got {got!r}: {why}")
    return received


def no_train_retries():
    """Ray Train's failure policy for a trial's workers: no restart, after an error *or* a preemption.

    ``max_failures=0`` alone leaves ``max_preemption_failures`` at -1 (unlimited), and a
    node drained by SIGTERM counts as a preemption: Train would start a fresh worker group
    whose first message (:data:`READY`) the trial does not expect. The trial fails
    instead, and Tune restores it from its own checkpoint.
    """
    from ray.train import FailureConfig

    return FailureConfig(max_failures=0, max_preemption_failures=0)


def trial_queues() -> tuple[Queue, Queue]:
    """The command and result queues of a trial: zero-CPU actors pinned (``soft=False``) to the caller's node.

    Called in the trial's actor, so the queues sit on the trial's node however full it
    is (Ray's default placement spills them to any node with room, where a lost node
    would take them from a trial that is still alive).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options = {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)}
    return Queue(actor_options=options), Queue(actor_options=options)


def _worker_info() -> dict[str, Any]:
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}


def _files(folder: Path) -> Optional[list]:
    """``[ref]`` to {name: bytes} of the checkpoints in ``folder`` (a list, so the queue passes the reference, not the bytes)."""
    found = {name: (folder / name).read_bytes() for name in (LAST, BEST) if (folder / name).is_file()}
    return [ray.put(found)] if found else None


def _state(trainer) -> dict[str, Any]:
    return {"history": trainer.history, "best": trainer.best, "next_epoch": trainer.next_epoch,
            "stopped_early": trainer.stopped_early, "manifest_hash": trainer.data.view.manifest_hash}


def worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: build the trainer (resuming from the files handed over), then train one epoch per command."""
    import ray.train.torch
    import torch

    from galaxy_da.train import Trainer

    cfg = validate(config["cfg"], "trial config")
    folder = Path(tempfile.mkdtemp(prefix="galaxy-da-worker-"))
    for name, blob in (ray.get(config["files"][0]) if config["files"] else {}).items():
        (folder / name).write_bytes(blob)
    commands, results = config["commands"], config["results"]
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives run on the current device
    trainer = Trainer(cfg, checkpoint_dir=folder, resume=config["files"] is not None, device=device)
    world = trainer.world
    workers = world.collect(_worker_info())
    try:
        if world.lead:
            results.put(message(READY, state=_state(trainer), workers=workers))
        epochs = trainer.epochs()
        while (command := world.share(commands.get() if world.lead else None)) == EPOCH:
            record = next(epochs, None)
            if world.lead:
                scored = record is not None and (is_scored_epoch(cfg, record["epoch"]) or trainer.finished)
                results.put(message(RECORD, record=record, state=_state(trainer), files=_files(folder) if scored else None))
        if command != STOP:
            raise WorkerError(f"the lead worker got command {command!r}; expected {EPOCH!r} or {STOP!r}")
    except BaseException as error:
        if world.lead:
            results.put(message(ERROR, error=f"{type(error).__name__}: {error}"))
        raise


def torch_trainer(cfg: TrialConfig, loop_config: dict[str, Any], *, use_gpu: bool, cpus_per_worker: float, storage_path: str, name: str):
    """The Ray Train run of a trial: ``workers_per_trial`` workers running :func:`worker_loop`, never retried by Train."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), **loop_config},
        scaling_config=ScalingConfig(num_workers=cfg.resources.workers_per_trial, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=storage_path, failure_config=no_train_retries()),
    )


class DistributedTrainer:
    """The trainer surface of one trial over ``cfg.resources.workers_per_trial`` Ray Train workers.

    ``use_gpu``: one whole GPU per worker (NCCL needs a device per rank);
    ``cpus_per_worker`` CPUs each. ``storage_path`` holds Ray Train's run
    folder (the sweep's storage). Blocks until every worker has built its trainer.
    """

    def __init__(self, cfg: TrialConfig, *, checkpoint_dir: Path, resume: bool, use_gpu: bool, cpus_per_worker: float,
                 storage_path: str, name: str) -> None:
        self.cfg, self.checkpoint_dir = cfg, Path(checkpoint_dir)
        self.commands, self.results = trial_queues()
        files = _files(self.checkpoint_dir) if resume else None
        trainer = torch_trainer(cfg, {"commands": self.commands, "results": self.results, "files": files},
                                use_gpu=use_gpu, cpus_per_worker=cpus_per_worker, storage_path=storage_path, name=name)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._fit, args=(trainer,), daemon=True, name=f"ddp-{name}")
        self.thread.start()
        ready = self._receive(READY)
        self.workers: list[dict[str, Any]] = ready["workers"]
        self._update(ready["state"])

    def _fit(self, trainer) -> None:
        try:
            trainer.fit()
        except BaseException as error:  # surfaced by the next _receive
            self.error = error

    def _receive(self, kind: str) -> dict[str, Any]:
        """The lead worker's next message, which must be of ``kind`` (:func:`expect`); a failed run raises its error (never waits on a dead run)."""
        while True:
            try:
                received = self.results.get(timeout=POLL_S)
            except Empty:
                if not self.thread.is_alive():
                    raise WorkerError(f"the workers stopped without answering: {self.error!r}") from self.error
                continue
            return expect(received, kind)

    def _update(self, state: dict[str, Any]) -> None:
        self.history, self.best, self.next_epoch = state["history"], state["best"], state["next_epoch"]
        self.stopped_early, self.manifest_hash = state["stopped_early"], state["manifest_hash"]

    @property
    def finished(self) -> bool:
        return self.stopped_early or self.next_epoch >= self.cfg.optim.epochs

    def tags(self) -> dict[str, str]:
        """Where the workers run, as MLflow run tags: per rank, in rank order."""
        return {"node_ip": ",".join(w["node_ip"] for w in self.workers), "node_id": ",".join(w["node_id"] for w in self.workers),
                "gpu_ids": json.dumps([w["gpu_ids"] for w in self.workers]), "workers": str(len(self.workers))}

    def epochs(self) -> Iterator[dict[str, Any]]:
        """Ask for one epoch at a time; its checkpoints are in ``checkpoint_dir`` before its record is yielded."""
        while not self.finished:
            self.commands.put(EPOCH)
            answer = self._receive(RECORD)
            self._update(answer["state"])
            if answer["files"]:
                for name, blob in ray.get(answer["files"][0]).items():
                    (self.checkpoint_dir / name).write_bytes(blob)
            if answer["record"] is None:
                return
            yield answer["record"]

    def result(self) -> TrainResult:
        return TrainResult(self.history, self.best["epoch"], self.best["score"], self.checkpoint_dir, self.stopped_early, self.manifest_hash)

    def close(self, timeout_s: float = 60.0) -> None:
        """Let the workers leave their loop and the Train run end."""
        if self.thread.is_alive():
            self.commands.put(STOP)
            self.thread.join(timeout_s)
        for queue in (self.commands, self.results):
            queue.shutdown()
