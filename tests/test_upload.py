"""Datasets in an S3-compatible object store: upload (manifest last), read through pyarrow, sha256 on read.

A real moto S3 server in a thread on 127.0.0.1; pyarrow finds it through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from galaxy_da.data.reader import DatasetError, ShardDataset
from galaxy_da.data.upload import upload

moto_server = pytest.importorskip("moto.server", reason="the [cluster] extra (moto)")


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A fresh bucket; the S3 filesystem the reader will use."""
    for key, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    bucket = f"b{abs(hash(monkeypatch)) % 10**8}"
    filesystem, _ = pafs.FileSystem.from_uri(f"s3://{bucket}?allow_bucket_creation=true")
    filesystem.create_dir(bucket)
    return filesystem, bucket


def test_an_uploaded_dataset_reads_the_same_through_s3(toy_dataset, s3):
    _, bucket = s3
    uri = upload(str(toy_dataset), f"s3://{bucket}/toy")
    local, remote = ShardDataset(str(toy_dataset)), ShardDataset(uri)
    assert remote.remote and remote.manifest == local.manifest
    a, b = local.training_view().source("train"), remote.training_view().source("train")
    assert (a.images == b.images).all() and (a.labels == b.labels).all()
    assert remote.training_view().target("adapt").labels is None  # the label guard holds over S3 too
    with pytest.raises(FileExistsError, match="--overwrite"):
        upload(str(toy_dataset), uri)


def test_a_modified_shard_fails_its_sha256_on_read_naming_the_shard(toy_dataset, s3):
    filesystem, bucket = s3
    uri = upload(str(toy_dataset), f"s3://{bucket}/toy")
    shard = next(s for s in ShardDataset(uri).manifest["shards"] if s["domain"] == "source")
    with filesystem.open_output_stream(f"{bucket}/toy/{shard['path']}") as stream:
        stream.write(b"not the shard")
    with pytest.raises(DatasetError, match=f"{shard['path']}: sha256 .* does not match"):
        ShardDataset(uri).training_view().source("train")


def test_an_interrupted_upload_is_not_a_dataset(toy_dataset, s3):
    filesystem, bucket = s3
    for shard in ShardDataset(str(toy_dataset)).manifest["shards"][:2]:  # shards only, no manifest: an upload cut short
        with filesystem.open_output_stream(f"{bucket}/cut/{shard['path']}") as stream:
            stream.write((toy_dataset / shard["path"]).read_bytes())
    with pytest.raises(DatasetError, match="no manifest.json"):
        ShardDataset(f"s3://{bucket}/cut").manifest


def test_upload_command_prints_the_summary_and_a_local_destination_is_an_error(toy_dataset, s3, tmp_path):
    _, bucket = s3
    out = subprocess.run([sys.executable, "-m", "galaxy_da.cli", "upload", str(toy_dataset), f"s3://{bucket}/cli"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"dataset s3://{bucket}/cli" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "galaxy_da.cli", "upload", str(toy_dataset), str(tmp_path / "copy")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a URI" in bad.stderr
