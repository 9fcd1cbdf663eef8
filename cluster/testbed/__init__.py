"""Simulated hosts on one Linux machine, for the multi-host tests (``make cluster-test``).

- :mod:`~cluster.testbed.net`: bridge, network namespaces, veth pairs on 10.213.0.0/24;
- :mod:`~cluster.testbed.host`: one host (PID 1, commands inside it, a lost machine);
- :mod:`~cluster.testbed.hostinit`: PID 1 of a host: private storage, sshd, reaping;
- :mod:`~cluster.testbed.ssh`: throw-away keys and sshd configuration;
- :mod:`~cluster.testbed.bed`: :class:`TestBed`, N hosts and their teardown;
- :mod:`~cluster.testbed.services`: the head's PostgreSQL, S3 (moto) and MLflow (basic auth), per-bed secrets;
- :mod:`~cluster.testbed.probe`: checks a host runs against those services;
- :mod:`~cluster.testbed.scenarios`: ray up / submit / down, faults' helpers, SLURM's node logic on every host.

``python -m cluster.testbed hold|selftest|reap`` (see :mod:`~cluster.testbed.__main__`).
"""
