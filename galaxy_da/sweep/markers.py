"""Small per-trial JSON markers in a sweep's storage (a local folder or any pyarrow URI).

``<experiment>/<folder>/<trial id>.json``: written by the driver or by a
scheduler, read by trials and by the driver after ``fit``, on any node of a
cluster (the storage is what every node reaches). :mod:`galaxy_da.sweep.stops`
keeps who stopped a trial, :mod:`galaxy_da.sweep.ended` which trials ended.
"""

from __future__ import annotations

import json
from typing import Any, Optional


def _paths(experiment_path: str, folder: str, trial_id: str = ""):
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
    return fs, f"{root}/{folder}", f"{root}/{folder}/{trial_id}.json"


def write_marker(experiment_path: str, folder: str, trial_id: str, payload: dict[str, Any]) -> None:
    fs, directory, path = _paths(experiment_path, folder, trial_id)
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(json.dumps(payload).encode())


def read_marker(experiment_path: str, folder: str, trial_id: str) -> Optional[dict[str, Any]]:
    """The marker of ``trial_id``, or None when there is none."""
    fs, _, path = _paths(experiment_path, folder, trial_id)
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read())
    except (FileNotFoundError, OSError):
        return None


def delete_marker(experiment_path: str, folder: str, trial_id: str) -> None:
    """Remove the marker of ``trial_id`` (nothing when there is none)."""
    fs, _, path = _paths(experiment_path, folder, trial_id)
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def all_markers(experiment_path: str, folder: str) -> dict[str, dict[str, Any]]:
    """``{trial id: marker}`` of every marker in ``folder`` (empty when the folder does not exist)."""
    import pyarrow.fs

    fs, directory, _ = _paths(experiment_path, folder)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(directory))
    except (FileNotFoundError, OSError):
        return {}
    markers = {}
    for info in infos:
        if info.is_file and info.base_name.endswith(".json"):
            with fs.open_input_stream(info.path) as stream:
                markers[info.base_name.removesuffix(".json")] = json.loads(stream.read())
    return markers
