import shutil

import numpy as np
import pytest
import torch

from galaxy_da.data.loader import BatchStream, ChannelStats, dihedral, dihedral_tables, to_float
from galaxy_da.data.reader import DatasetError, LabelGuardError, ShardDataset
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.writer import DatasetWriter
from tests.conftest import tamper_with_shard, write_toy_dataset


def test_round_trip_preserves_every_row(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 3, 9, 9), dtype=np.uint8)
    labels = rng.integers(0, 3, 50)
    splits = assign_splits(labels, "source", seed=0)
    with DatasetWriter(tmp_path / "ds", (3, 9, 9), shard_rows=16) as writer:
        writer.add_batch("source", [f"s{i}" for i in range(30)], splits[:30], labels[:30], images[:30])
        writer.add_batch("source", [f"s{i}" for i in range(30, 50)], splits[30:], labels[30:], images[30:])
        writer.add_batch("target", ["t0", "t1"], ["adapt", "test"], [0, 2], images[:2])
    dataset = ShardDataset(str(tmp_path / "ds"), verify=True)
    assert len([s for s in dataset.manifest["shards"] if s["domain"] == "source"]) == 4  # 16+16+16+2
    view = dataset.evaluation_view()
    got = {}
    for split in ("train", "val"):
        part = view.labelled("source", split)
        for oid, image, label in zip(part.object_ids, part.images, part.labels):
            got[oid] = (image, label)
    assert len(got) == 50
    for i in range(50):
        image, label = got[f"s{i}"]
        assert np.array_equal(image, images[i]) and label == labels[i]
    assert dataset.counts("source", "val") == [int(((labels == c) & (splits == "val")).sum()) for c in range(3)]


def test_reader_accepts_a_filesystem_uri(toy_dataset):
    local = ShardDataset(str(toy_dataset)).training_view().source("train")
    remote = ShardDataset(toy_dataset.resolve().as_uri(), verify=True).training_view().source("train")
    assert remote.images.shape == local.images.shape and np.array_equal(remote.images, local.images)


def test_corrupted_shard_is_named(tmp_path, toy_dataset):
    copy = tmp_path / "copy"
    shutil.copytree(toy_dataset, copy)
    shard = copy / "target" / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="target/part-00001.parquet: sha256"):
        ShardDataset(str(copy), verify=True)


def test_every_read_checks_the_shard_unless_told_not_to(tmp_path, toy_dataset):
    """A shard rewritten as valid Parquet (one pixel changed) is refused by a plain read, naming it."""
    copy = tmp_path / "copy"
    shutil.copytree(toy_dataset, copy)
    tamper_with_shard(copy / "target" / "part-00001.parquet")
    with pytest.raises(DatasetError, match=r"copy/target/part-00001\.parquet: sha256 .* does not match the manifest"):
        ShardDataset(str(copy)).training_view().target("adapt")
    assert ShardDataset(str(copy)).training_view().source("train").images.shape[0] > 0  # other shards still read
    unchecked = ShardDataset(str(copy), check_hashes=False).training_view().target("adapt")
    assert unchecked.images.shape == ShardDataset(str(toy_dataset)).training_view().target("adapt").images.shape


def test_unfinished_dataset_is_never_read(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", (3, 5, 5), shard_rows=2)
    writer.add_batch("source", ["a", "b", "c"], ["train"] * 3, [0, 1, 2], np.zeros((3, 3, 5, 5), np.uint8))
    assert not (tmp_path / "ds").exists()  # everything so far lives in ds.partial
    with pytest.raises(DatasetError, match="not a finished dataset.*did not finish"):
        ShardDataset(str(tmp_path / "ds")).manifest
    writer.close()
    assert ShardDataset(str(tmp_path / "ds")).manifest["counts"]["source"]["train"]["irregular"] == 1


def test_writer_rejects_bad_rows_with_reasons(tmp_path):
    with pytest.raises(ValueError, match="duplicate object_id"):
        with DatasetWriter(tmp_path / "ds", (3, 5, 5)) as writer:
            writer.add_batch("source", ["a", "a"], ["train"] * 2, [0, 1], np.zeros((2, 3, 5, 5), np.uint8))
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()
    with pytest.raises(ValueError, match="unknown split 'test'"):
        DatasetWriter(tmp_path / "ds2", (3, 5, 5)).add_batch("source", ["a"], ["test"], [0], np.zeros((1, 3, 5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 of shape \(1, 3, 5, 5\)"):
        DatasetWriter(tmp_path / "ds3", (3, 5, 5)).add_batch("source", ["a"], ["train"], [0], np.zeros((1, 3, 4, 4), np.uint8))


def test_writes_are_deterministic(tmp_path):
    a = write_toy_dataset(tmp_path / "a", seed=3)
    b = write_toy_dataset(tmp_path / "b", seed=3)
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()


def test_splits_are_stratified_seeded_and_domain_specific():
    labels = np.repeat([0, 1, 2], [50, 11, 139])
    splits = assign_splits(labels, "source", seed=7)
    for cls, n in zip(range(3), (50, 11, 139)):
        assert (splits[labels == cls] == "val").sum() == max(1, int(0.2 * n))
    assert np.array_equal(splits, assign_splits(labels, "source", seed=7))
    assert not np.array_equal(splits, assign_splits(labels, "source", seed=8))
    assert set(assign_splits(labels, "target", seed=7)) == {"adapt", "test"}


def test_training_view_withholds_target_labels(toy_dataset):
    dataset = ShardDataset(str(toy_dataset))
    view = dataset.training_view()
    assert view.source("train").labels is not None
    target = view.target("adapt")
    assert target.labels is None and len(target) > 0
    with pytest.raises(LabelGuardError):
        view.target_labels()
    assert not hasattr(view, "labelled")
    assert dataset.evaluation_view().labelled("target", "test").labels is not None


def public_reach(root, depth: int = 4) -> list:
    """Every object reachable from ``root`` through public attributes (no calls), breadth first."""
    seen, frontier, found = {id(root)}, [root], [root]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            for name in dir(obj):
                if name.startswith("_"):
                    continue
                try:
                    value = getattr(obj, name)
                except Exception:
                    continue
                if id(value) not in seen and not isinstance(value, (str, bytes, int, float, tuple, type(None))):
                    seen.add(id(value))
                    nxt.append(value)
                    found.append(value)
        frontier = nxt
    return found


def test_no_public_attribute_of_what_training_holds_leads_to_target_labels(toy_dataset):
    """Neither the training view nor a trial's data exposes the dataset (whose evaluation_view reads target labels)."""
    from galaxy_da.config import load_config
    from galaxy_da.trial_data import load_trial_data

    data = load_trial_data(load_config(None, {"data.path": str(toy_dataset)}))
    for root in (ShardDataset(str(toy_dataset)).training_view(), data):
        reachable = public_reach(root)
        assert not [obj for obj in reachable if hasattr(obj, "evaluation_view") or hasattr(obj, "labelled")]
    assert data.target_adapt.labels is None


def test_manifest_counts_match_rows(toy_dataset):
    dataset = ShardDataset(str(toy_dataset))
    view = dataset.evaluation_view()
    for domain, splits in (("source", ("train", "val")), ("target", ("adapt", "test"))):
        for split in splits:
            labels = view.labelled(domain, split).labels
            assert dataset.counts(domain, split) == np.bincount(labels, minlength=3).tolist()


def test_normalisation_and_dihedral_augmentation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 3, 7, 7), dtype=np.uint8)
    stats = ChannelStats.of(images)
    normed = to_float(torch.from_numpy(images), stats.affine())
    assert torch.allclose(normed.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normed.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    layout = to_float(torch.from_numpy(images), stats.affine(), torch.channels_last)
    assert layout.is_contiguous(memory_format=torch.channels_last) and torch.equal(layout, normed)
    batch = torch.from_numpy(images)
    elements = torch.arange(64) % 8
    augmented = dihedral(batch, elements, dihedral_tables(7))
    for original, transformed, element in zip(batch, augmented, elements.tolist()):  # element e: flip if e >= 4, then rot90^(e mod 4)
        expected = torch.rot90(original.flip(-1) if element >= 4 else original, element % 4, (-2, -1))
        assert torch.equal(transformed, expected)


def test_channel_statistics_cover_every_image_of_every_domain_by_its_size():
    """Shared statistics are those of the union, however large: a domain past the first 4,096 images still counts."""
    rng = np.random.default_rng(1)
    source = rng.integers(0, 120, (3000, 3, 5, 5), dtype=np.uint8)
    target = rng.integers(100, 256, (2000, 3, 5, 5), dtype=np.uint8)
    union = np.concatenate([source, target]).astype(np.float64) / 255.0
    shared = ChannelStats.of(source, target)
    assert shared.mean == pytest.approx(union.mean(axis=(0, 2, 3)).tolist(), rel=1e-12)
    assert shared.std == pytest.approx(union.transpose(1, 0, 2, 3).reshape(3, -1).std(axis=1, ddof=1).tolist(), rel=1e-12)
    ordered = np.concatenate([source, target])  # one catalogue sorted by domain: every row counts, not the first ones
    assert ChannelStats.of(ordered) == shared
    alone = ChannelStats.of(source)
    assert alone.mean == pytest.approx((source / 255.0).mean(axis=(0, 2, 3)).tolist(), rel=1e-12)


def test_batch_stream_is_seeded_and_resumable(toy_dataset):
    source = ShardDataset(str(toy_dataset)).training_view().source("train")
    stats = ChannelStats.of(source.images)
    first = BatchStream(source, 16, stats, seed=5, augment=True)
    second = BatchStream(source, 16, stats, seed=5, augment=True)
    for (xa, ya), (xb, yb) in zip(first.epoch(7), second.epoch(7)):  # crosses a pass over the split
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    state = first.state_dict()
    expected = next(first.epoch(1))
    resumed = BatchStream(source, 16, stats, seed=99, augment=True)
    resumed.load_state_dict(state)
    got = next(resumed.epoch(1))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_sharded_streams_cut_the_one_worker_batch_into_equal_slices(toy_dataset):
    """W workers with batch b see exactly the samples and augmentations of one worker with batch W b."""
    source = ShardDataset(str(toy_dataset)).training_view().source("train")
    stats = ChannelStats.of(source.images)
    whole = list(BatchStream(source, 16, stats, seed=3, augment=True).epoch(5))
    slices = [list(BatchStream(source, 8, stats, seed=3, augment=True, shard=(rank, 2)).epoch(5)) for rank in (0, 1)]
    for step, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([slices[0][step][0], slices[1][step][0]]), images)
        assert torch.equal(torch.cat([slices[0][step][1], slices[1][step][1]]), labels)
