"""Simulated hosts on one Linux machine, for the multi-host tests (``make cluster-test``).

- :mod:`~cluster.testbed.net`: bridge, network namespaces, veth pairs on 10.213.0.0/24;
- :mod:`~cluster.testbed.host`: one host (PID 1, commands inside it, a lost machine);
- :mod:`~cluster.testbed.hostinit`: PID 1 of a host: private storage, sshd, reaping;
- :mod:`~cluster.testbed.ssh`: throw-away keys and sshd configuration;
- :mod:`~cluster.testbed.bed`: :class:`TestBed`, N hosts and their teardown.
"""
