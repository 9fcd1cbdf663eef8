"""A sweep refuses a tracking store, dataset or storage folder that the other hosts of its Ray cluster cannot reach.

The hosts come from a real local Ray (its ``ray.nodes()``) and from the
repository's own cluster YAMLs, as ``ray up`` leaves them (Ray's
``prepare_config``); the mount table is this machine's, or a sample of the
kernel's format where a shared filesystem is needed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from galaxy_da.config import ConfigError, load_config
from galaxy_da.sweep.hosts import ClusterHosts, addable_from_config, addable_from_groups, hosts_up, is_loopback
from galaxy_da.sweep.mounts import SHARED_FILESYSTEMS, filesystem_type
from galaxy_da.sweep.reach import check_location, check_reach, check_tracking, is_local_store

ROOT = Path(__file__).resolve().parents[1]
ONE_HOST = ClusterHosts(up=("10.0.0.1",))
AUTOSCALING = ClusterHosts(up=("10.0.0.1",), addable=("gpu_worker, up to 8",))
# Two mounts in /proc/self/mountinfo's format: the root on a local disk, a shared NFS folder, one with a space in its name.
MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
41 22 0:40 / /shared rw,relatime shared:20 - nfs4 10.0.0.9:/export rw,vers=4.2
42 41 8:2 / /shared/scratch\\040disk rw,relatime shared:21 - xfs /dev/sdb1 rw
"""


def yaml_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def as_ray_up_writes_it(config: dict) -> dict:
    """The autoscaler config ``ray up`` leaves on the head (``~/ray_bootstrap_config.yaml``): Ray's ``prepare_config``."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(config))


@pytest.mark.parametrize("uri, local", [
    ("sqlite:///mlflow/mlflow.db", True), ("file:///tmp/mlruns", True), ("mlruns", True),
    ("http://10.0.0.1:5000", False), ("https://mlflow.example", False), ("databricks://profile", False),
])
def test_which_stores_live_on_the_drivers_disk(uri, local):
    assert is_local_store(uri) is local


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", True), ("mlflow.localhost", True),
    ("10.213.0.1", False), ("head", False), ("mlflow.example", False), (None, False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_the_gpu_cluster_can_add_hosts_though_only_its_head_is_up_at_start():
    for config in (yaml_config("gpu.yaml"), as_ray_up_writes_it(yaml_config("gpu.yaml"))):
        assert addable_from_config(config) == ("gpu_worker, up to 8",)


def test_the_on_premise_cluster_adds_its_worker_ips_and_nothing_on_this_host():
    config = yaml_config("local.yaml")
    assert addable_from_config(as_ray_up_writes_it(config)) == ()  # head_ip 127.0.0.1, no worker_ips: this host alone
    config["provider"].update(head_ip="10.213.0.1", worker_ips=["10.213.0.2", "10.213.0.3"])
    assert addable_from_config(as_ray_up_writes_it(config)) == ("worker 10.213.0.2", "worker 10.213.0.3")


def test_nodes_the_fake_provider_adds_are_raylets_on_this_host():
    from tests.autoscaling import LocalAutoscalingCluster

    config = LocalAutoscalingCluster._generate_config(object.__new__(LocalAutoscalingCluster), {"CPU": 1},
                                                      {"gpu_worker": {"resources": {"GPU": 1}, "node_config": {}, "max_workers": 2}})
    assert config["provider"]["type"] == "fake_multinode" and addable_from_config(config) == ()


def test_node_groups_in_rays_cluster_config_count_when_they_can_grow():
    groups = {"head": {"min_workers": 1, "max_workers": 1}, "cpu": {"min_workers": 2, "max_workers": 2},
              "gpu": {"min_workers": 0, "max_workers": 4}, "spot": {"min_workers": 0, "max_workers": -1}}
    assert addable_from_groups(groups) == ("gpu, up to 4", "spot, up to any number")


def test_a_single_host_may_use_anything_on_its_own_disk(tmp_path):
    check_reach("sqlite:///mlflow.db", str(tmp_path / "data"), str(tmp_path / "ray"), ONE_HOST)
    check_tracking("http://127.0.0.1:5000", ClusterHosts(up=("10.0.0.1",)))


def test_an_autoscaling_cluster_refuses_a_local_store_naming_what_it_can_add():
    with pytest.raises(ConfigError, match=r"sqlite:///mlflow.db \(--tracking-uri\).*gpu_worker, up to 8.*--tracking-uri http://HOST:PORT") as error:
        check_tracking("sqlite:///mlflow.db", AUTOSCALING)
    assert "\n" not in str(error.value)
    check_tracking("http://10.0.0.1:5000", AUTOSCALING)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "http://localhost:5000", "https://[::1]:8443/mlflow"])
def test_a_loopback_tracking_uri_is_refused_on_several_hosts(uri):
    with pytest.raises(ConfigError, match=r"\(--tracking-uri\): a loopback address, which .* resolve to themselves") as error:
        check_tracking(uri, AUTOSCALING)
    assert "\n" not in str(error.value)


def test_local_data_and_storage_are_refused_unless_every_host_mounts_them(tmp_path):
    for flag in ("--data", "--storage-path"):
        with pytest.raises(ConfigError, match=rf"^{flag} /srv/galaxy: a folder on this host's ext4 filesystem, .*gpu_worker.*\(s3://BUCKET/"):
            check_location(flag, "/srv/galaxy", AUTOSCALING, MOUNTINFO)
    check_location("--data", "/shared/galaxy/synth", AUTOSCALING, MOUNTINFO)  # on NFS: every host reads it
    check_location("--storage-path", "file:///shared/ray_results", AUTOSCALING, MOUNTINFO)
    with pytest.raises(ConfigError, match="xfs filesystem"):
        check_location("--storage-path", "/shared/scratch disk/ray", AUTOSCALING, MOUNTINFO)  # a local disk mounted inside the share
    check_location("--data", "s3://bucket/synth", AUTOSCALING, MOUNTINFO)
    # this machine's own mount table: a pytest folder is refused exactly when its filesystem is not a shared one
    kind = filesystem_type(str(tmp_path / "not-yet" / "ray"))
    if kind in SHARED_FILESYSTEMS:
        check_location("--storage-path", str(tmp_path / "not-yet" / "ray"), AUTOSCALING)
    else:
        with pytest.raises(ConfigError, match=f"this host's {kind} filesystem"):
            check_location("--storage-path", str(tmp_path / "not-yet" / "ray"), AUTOSCALING)


@pytest.fixture(scope="module")
def ray_nodes():
    """``ray.nodes()`` of a real one-node local Ray (fake resources)."""
    import ray

    from galaxy_da.sweep.ray_start import init_local_ray

    init_local_ray(num_cpus=1, resources={"reach_test": 1}, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.nodes()
    finally:
        ray.shutdown()


def test_hosts_are_counted_by_address_not_by_raylet(ray_nodes):
    up = hosts_up(ray_nodes)
    assert len(up) == 1 and not ClusterHosts(up).several
    same_host = copy.deepcopy(ray_nodes[0]) | {"NodeID": "f" * 56}  # a second raylet on this machine
    assert hosts_up([*ray_nodes, same_host]) == up
    elsewhere = same_host | {"NodeManagerAddress": "10.213.0.2"}
    gone = same_host | {"NodeManagerAddress": "10.213.0.3", "Alive": False}
    hosts = ClusterHosts(hosts_up([*ray_nodes, elsewhere, gone]))
    assert hosts.several and hosts.others() == "the 1 other host(s) up now"
    with pytest.raises(ConfigError, match="loopback"):
        check_tracking("http://localhost:5000", hosts)


@pytest.mark.slow
def test_a_sweep_that_can_autoscale_to_other_hosts_refuses_sqlite_before_starting(toy_dataset, tmp_path):
    """A real sweep on a local Ray, told (--autoscaler-config) that the cluster can add gpu.yaml's GPU workers."""
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    cfg = load_config(None, {"data.path": str(toy_dataset), "tracking.experiment": "reach"})
    settings = SweepSettings(name="reach", space={"align.topk": {"choice": [1, 2]}}, storage_path=str(tmp_path / "ray"),
                             tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", num_cpus=1,
                             autoscaler_config=str(ROOT / "cluster" / "gpu.yaml"))
    with pytest.raises(ConfigError, match=r"--tracking-uri.*gpu_worker, up to 8"):
        run_sweep(cfg, settings)
    assert not (tmp_path / "mlflow.db").exists()  # refused before any server or run was started
