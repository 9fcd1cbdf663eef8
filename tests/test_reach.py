"""A sweep refuses a tracking store that the other nodes of its Ray cluster cannot reach.

The refusal is checked on a real two-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``: two raylets, one GCS).
"""

from __future__ import annotations

import pytest

from galaxy_da.config import ConfigError, load_config
from galaxy_da.sweep.reach import check_reachable, is_local_store


@pytest.mark.parametrize("uri, local", [
    ("sqlite:///mlflow/mlflow.db", True), ("file:///tmp/mlruns", True), ("mlruns", True),
    ("http://10.0.0.1:5000", False), ("https://mlflow.example", False), ("databricks://profile", False),
])
def test_which_stores_live_on_the_drivers_disk(uri, local):
    assert is_local_store(uri) is local


def test_one_node_may_use_a_local_store_and_several_may_not():
    check_reachable("sqlite:///mlflow.db", nodes=1)
    check_reachable("http://head:5000", nodes=3)
    with pytest.raises(ConfigError, match=r"other 2 node\(s\).*--tracking-uri http://HOST:PORT") as error:
        check_reachable("sqlite:///mlflow.db", nodes=3)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_sweep_on_a_two_node_ray_cluster_refuses_sqlite_before_starting(toy_dataset, tmp_path):
    from ray.cluster_utils import Cluster

    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        try:
            cluster.add_node(num_cpus=1)
        except Exception as error:  # Ray gives a raylet 30 s to register; an overloaded machine can miss that once
            if "timed out during startup" not in str(error):
                raise
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cfg = load_config(None, {"data.path": str(toy_dataset), "tracking.experiment": "reach"})
        settings = SweepSettings(name="reach", space={"align.topk": {"choice": [1, 2]}}, storage_path=str(tmp_path / "ray"),
                                 tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", address=cluster.address)
        with pytest.raises(ConfigError, match=r"other 1 node\(s\)"):
            run_sweep(cfg, settings)
        assert not (tmp_path / "mlflow.db").exists()  # refused before any server or run was started
    finally:
        cluster.shutdown()
