"""The launch layer: Ray Tune sweeps over trial configs.

- :mod:`~galaxy_da.sweep.space`: search spaces over dotted config paths (plain data);
- :mod:`~galaxy_da.sweep.settings`: how a sweep runs, resources per trial;
- :mod:`~galaxy_da.sweep.gpus`: whether trials ask for GPUs, from the node types the cluster can add;
- :mod:`~galaxy_da.sweep.trainable`: one trial inside a Ray worker;
- :mod:`~galaxy_da.sweep.ddp`: a trial over several Ray Train workers (DDP);
- :mod:`~galaxy_da.sweep.tuner`: searcher, scheduler and the driver (``run_sweep``);
- :mod:`~galaxy_da.sweep.state`: the sweep's state file and MLflow parent run;
- :mod:`~galaxy_da.sweep.leaderboard`: the leaderboard read back from MLflow;
- :mod:`~galaxy_da.sweep.tracking_server`: one MLflow server for a sweep;
- :mod:`~galaxy_da.sweep.hosts`: the hosts trials may run on (nodes up, node types the autoscaler can add);
- :mod:`~galaxy_da.sweep.mounts`: whether a local folder is on a filesystem other hosts mount;
- :mod:`~galaxy_da.sweep.reach`: a store, dataset or storage folder the cluster's other hosts cannot reach is refused;
- :mod:`~galaxy_da.sweep.nodes`: one Ray node per task of an allocation (SLURM, the test bed);
- :mod:`~galaxy_da.sweep.cli`: the shared command line of ``sweeps/*.py``.

``space``, ``settings``, ``state``, ``leaderboard``, ``tracking_server`` and ``cli``
import no Ray at import time (the CLI checks a sweep before Ray starts); nothing in
the core imports this package, so importing the core never starts Ray.
"""
