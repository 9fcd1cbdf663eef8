"""One dataset, several target surveys: ``data.target`` picks the shards, counts and statistics a trial sees."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from galaxy_da.config import load_config
from galaxy_da.data.errors import DatasetError
from galaxy_da.data.reader import ShardDataset
from galaxy_da.data.schema import MANIFEST_NAME
from galaxy_da.data.synth import generate
from galaxy_da.trial_data import load_trial_data

N_SOURCE, N_TARGET, SIZE = 24, 30, 17


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("targets") / "ds", seed=3, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, progress=False)


@pytest.mark.parametrize("target", ["sdss", "desi"])
def test_data_target_picks_the_surveys_shards_and_counts(two_targets, target):
    dataset = ShardDataset(str(two_targets), target=target)
    view = dataset.evaluation_view()
    adapt, test = view.labelled("target", "adapt"), view.labelled("target", "test")
    assert all(object_id.startswith(f"synth-{target}-") for object_id in [*adapt.object_ids, *test.object_ids])
    assert len(adapt) + len(test) == N_TARGET
    assert np.bincount(test.labels, minlength=3).tolist() == dataset.counts("target", "test")
    assert view.target_survey == dataset.target_survey == target
    assert len(dataset.read_table("target", ["object_id"])) == N_TARGET


def test_the_default_target_is_sdss(two_targets):
    assert ShardDataset(str(two_targets)).target_survey == "sdss"
    ids = ShardDataset(str(two_targets)).training_view().target("adapt").object_ids
    assert all(object_id.startswith("synth-sdss-") for object_id in ids)


def test_a_trial_reads_the_configured_target(two_targets):
    cfg = load_config(None, [f"data.path={two_targets}", "data.target=desi"])
    data = load_trial_data(cfg)
    assert data.view.target_survey == "desi"
    assert all(object_id.startswith("synth-desi-") for object_id in data.target_adapt.object_ids)
    default = load_trial_data(load_config(None, [f"data.path={two_targets}"]))
    assert not np.array_equal(default.target_stats.mean, data.target_stats.mean)  # statistics of the survey read


def test_a_sweep_trial_reads_the_target_its_space_gives(two_targets):
    from galaxy_da.sweep.space import trial_config

    base = load_config(None, [f"data.path={two_targets}"]).model_dump(mode="json")
    space = {"align.label_shift": {"grid": ["none", "bbse"]}, "data.target": {"grid": ["sdss", "desi"]}}
    for target in ("desi", "sdss"):
        cfg = trial_config(base, space, {"align.label_shift": "bbse", "data.target": target})
        data = load_trial_data(cfg)
        assert cfg.data.target == data.view.target_survey == target and cfg.align.label_shift == "bbse"
        assert all(object_id.startswith(f"synth-{target}-") for object_id in data.target_adapt.object_ids)


def test_an_unknown_target_is_one_line_naming_data_target_and_the_surveys_held(two_targets):
    view = ShardDataset(str(two_targets), target="hsc").training_view()
    with pytest.raises(DatasetError) as error:
        view.target("adapt")
    message = str(error.value)
    assert "\n" not in message and message.startswith("data.target 'hsc'")
    assert "desi" in message and "sdss" in message
    assert len(view.source("train")) > 0  # the source is still read


def test_cached_reads_keep_surveys_apart(two_targets):
    from galaxy_da.data.reader import cached_reads

    with cached_reads():
        sdss = ShardDataset(str(two_targets), target="sdss").training_view().target("adapt")
        desi = ShardDataset(str(two_targets), target="desi").training_view().target("adapt")
    assert sdss.object_ids[0].startswith("synth-sdss-") and desi.object_ids[0].startswith("synth-desi-")


def _as_version_1(manifest: dict) -> dict:
    """What the writer wrote before target surveys, for a dataset with only the sdss target."""
    return {
        **{k: v for k, v in manifest.items() if k != "targets"},
        "schema_version": 1,
        "counts": {"source": manifest["counts"]["source"], "target": manifest["counts"]["target"]["sdss"]},
        "shards": [{k: v for k, v in shard.items() if k != "target"} for shard in manifest["shards"]],
    }


def test_a_version_1_dataset_is_its_one_sdss_target(tmp_path):
    out = generate(tmp_path / "ds", seed=0, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, progress=False, targets=["sdss"])
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    (out / MANIFEST_NAME).write_text(json.dumps(_as_version_1(manifest)))
    dataset = ShardDataset(str(out), verify=True)
    assert list(dataset.targets) == ["sdss"] and sum(dataset.counts("target", "adapt")) + sum(dataset.counts("target", "test")) == N_TARGET
    assert len(dataset.training_view().target("adapt")) == sum(dataset.counts("target", "adapt"))
    with pytest.raises(DatasetError, match="data.target 'desi'.*holds sdss"):
        ShardDataset(str(out), target="desi").training_view().target("adapt")


def test_a_shard_of_an_undeclared_survey_is_refused(two_targets, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(two_targets, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    shard = next(s for s in manifest["shards"] if s.get("target") == "desi")
    shard["target"] = "hsc"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=f"{shard['path']}: target survey 'hsc' is not one of"):
        ShardDataset(str(copy)).manifest


def test_counts_that_disagree_with_the_shards_are_refused(two_targets, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(two_targets, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["counts"]["target"]["desi"]["test"]["spiral"] += 1
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="target desi: shards hold 30 rows, counts say 31"):
        ShardDataset(str(copy)).manifest
