"""A user's mistake at the command line is one line naming the flag, key or file at fault, never a traceback;
a flag's help says what it does; overrides may come before or after the flags; Ctrl-C says how to resume."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
PYTHON = sys.executable


def error_line(capsys) -> str:
    """The one line a command wrote to stderr."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- overrides


def test_an_override_that_is_not_yaml_names_the_override(capsys):
    assert main(["train", "optim.lr=["]) == 2
    assert error_line(capsys).startswith("galaxy-da train: error: override 'optim.lr=[': value is not valid YAML (")


def test_train_overrides_may_follow_the_flags(capsys):
    assert main(["train", "model.width=4", "--config", SMOKE, "optim.epochs=0"]) == 2  # parsed, then refused by validation
    assert "optim.epochs" in error_line(capsys)


def test_a_sweep_script_reads_overrides_before_and_after_its_flags():
    from galaxy_da.commands import parse_arguments
    from galaxy_da.sweep.cli import base_config_path, parser

    cli = parser(None, 4, "optuna", base_config_path("topk"))
    args = parse_arguments(cli, ["model.width=4", "--smoke-test", "--num-samples", "2", "optim.epochs=2", "--no-use-gpu"])
    assert args.overrides == ["model.width=4", "optim.epochs=2"] and args.smoke_test and args.num_samples == 2 and args.use_gpu is False


def test_a_sweep_script_run_with_overrides_after_its_flags_gets_to_its_config():
    done = subprocess.run([PYTHON, str(ROOT / "sweeps" / "topk.py"), "model.width=4", "--config", SMOKE, "optim.epochs=0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "optim.epochs" in done.stderr and "unrecognized arguments" not in done.stderr, done.stderr


# ---------------------------------------------------------------- train --resume and Ctrl-C


def test_resume_without_a_checkpoint_dir_is_refused(capsys):
    assert main(["train", "--resume"]) == 2
    line = error_line(capsys)
    assert "--resume" in line and "--checkpoint-dir" in line


def test_resume_from_a_folder_without_last_pt_is_refused(capsys, tmp_path):
    assert main(["train", "--resume", "--checkpoint-dir", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert f"--resume: no {tmp_path / 'last.pt'}" in line and "--checkpoint-dir" in line


def test_ctrl_c_names_the_checkpoint_folder_and_the_resume_command(toy_dataset, tmp_path):
    """SIGINT once the first epoch's line is out (last.pt is written before it), so nothing depends on timing."""
    folder = tmp_path / "ckpt"
    words = [f"data.path={toy_dataset}", "optim.epochs=1000", "optim.warmup_epochs=0", "optim.steps_per_epoch=1", "model.width=2"]
    command = [PYTHON, "-m", "galaxy_da.cli", "train", "--config", SMOKE, *words, "--no-track", "--checkpoint-dir", str(folder)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as process:
        first = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    assert first.split()[:2] == ["epoch", "1/1000"], (first, err)
    assert process.returncode == 130 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"interrupted; checkpoints in {folder}; resume with: galaxy-da train --config {SMOKE} ")
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[-3:] == ["--checkpoint-dir", str(folder), "--resume"] and all(word in resume for word in [*words, "--no-track"])
    assert (folder / "last.pt").is_file()


# ---------------------------------------------------------------- manifest.json


@pytest.mark.parametrize("text, expected", [
    ("{", "not valid JSON (Expecting property name enclosed in double quotes: line 2 column 1 (char 2))"),
    ("[]", "expected a JSON object, got an array"),
    ('{"schema_version": 2, "class_names": [], "image_shape": [], "counts": {"source": {}, "target": {}}, "shards": []}', "missing key 'targets'"),
    ('{"schema_version": 1, "class_names": [], "image_shape": [], "shards": []}', "missing key 'counts'"),
    ('{"schema_version": 1, "class_names": [], "image_shape": [], "counts": {"source": {}}, "shards": []}', "missing key 'counts.target'"),
    ('{"schema_version": 2, "class_names": [], "image_shape": [], "counts": {"source": {}, "target": {}}, "targets": {}, '
     '"shards": [{"path": "source/part-00000.parquet", "domain": "source", "sha256": "0"}]}', "missing key 'shards[0].rows'"),
])
def test_a_bad_manifest_is_named_with_what_is_wrong(tmp_path, capsys, text, expected):
    (tmp_path / "manifest.json").write_text(text + "\n")
    assert main(["validate", str(tmp_path)]) == 1
    assert error_line(capsys) == f"INVALID: {tmp_path}/manifest.json: {expected}"
    assert main(["summary", str(tmp_path)]) == 2
    assert error_line(capsys) == f"galaxy-da summary: error: {tmp_path}/manifest.json: {expected}"


@pytest.mark.parametrize("folder, flags", [
    ("quality", "--n-source 3000 --n-target 2500 --targets sdss"),
    ("label_shift", "--n-source 3000 --n-target 2500 --targets sdss desi"),
    ("synth", ""),
    ("mine", ""),
])
def test_a_missing_dataset_hints_the_command_that_renders_it(tmp_path, capsys, folder, flags):
    import argparse

    from galaxy_da.commands import synth

    out = tmp_path / "data" / folder
    assert main(["summary", str(out)]) == 2
    command = f"galaxy-da synth --out {out}" + (f" {flags}" if flags else "")
    assert f"(render one with `{command}`, or point" in error_line(capsys)
    parser = argparse.ArgumentParser()
    synth.configure(parser)
    args = parser.parse_args(shlex.split(command)[2:])  # the flags are synth's own
    assert str(args.out) == str(out)


# ---------------------------------------------------------------- synth and ingest flags


def test_synth_refuses_zero_shard_rows_before_rendering(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "--out", str(out), "--shard-rows", "0", "--n-source", "3", "--n-target", "3", "--size", "16", "--targets", "sdss"]) == 2
    assert error_line(capsys) == "galaxy-da synth: error: --shard-rows must be >= 1, got 0"
    assert not out.exists() and not (tmp_path / "ds.partial").exists()


def ingest_command(tmp_path: Path, **folders: Path) -> list[str]:
    labels = tmp_path / "labels.csv"
    labels.write_text("subhalo_id,classification\n")
    images = {"source": folders.get("source", tmp_path), "target": folders.get("target", tmp_path)}
    return ["ingest", "--source-images", str(images["source"]), "--source-labels", str(labels),
            "--target-images", str(images["target"]), "--target-labels", str(labels), "--out", str(folders.get("out", tmp_path / "out"))]


def test_ingest_names_a_mistyped_image_folder(tmp_path, capsys):
    assert main(ingest_command(tmp_path, target=tmp_path / "GZ2-typo")) == 2
    assert error_line(capsys) == f"galaxy-da ingest: error: --target-images / target_images {tmp_path / 'GZ2-typo'}: no such folder"
    assert main(ingest_command(tmp_path, source=tmp_path / "labels.csv")) == 2
    assert error_line(capsys) == f"galaxy-da ingest: error: --source-images / source_images {tmp_path / 'labels.csv'}: not a folder"


def test_ingest_checks_shard_rows_and_names_the_overwrite_flag(tmp_path, capsys):
    assert main([*ingest_command(tmp_path), "--shard-rows", "0"]) == 2
    assert error_line(capsys) == "galaxy-da ingest: error: --shard-rows / shard_rows must be >= 1, got 0"
    assert main(ingest_command(tmp_path, out=tmp_path)) == 2
    assert error_line(capsys) == f"galaxy-da ingest: error: {tmp_path}: already exists (pass --overwrite / overwrite=True to replace it)"


# ---------------------------------------------------------------- help and unknown scripts


def help_text(argv: list[str], capsys, entry=main) -> str:
    with pytest.raises(SystemExit):
        entry(argv)
    return " ".join(capsys.readouterr().out.split())


def test_help_says_what_each_flag_and_command_does(capsys):
    from galaxy_da.sweep import nodes
    from galaxy_da.sweep.cli import base_config_path, parser

    sweep = parser(None, 4, "optuna", base_config_path("topk"))
    assert [action.dest for action in sweep._actions if not action.help] == []
    assert "--num-gpus NUM_GPUS GPUs this node offers (default: 0)" in help_text(["--help"], capsys, nodes.main)
    assert "best (best.pt, the epoch its label-free selection.rule chose) or last (last.pt" in help_text(["eval", "--help"], capsys)
    top = help_text(["--help"], capsys)
    assert "GZ2 or GZ DESI" in top and "fresh local Ray instance" in top and "--address auto or $RAY_ADDRESS" in top
    assert "render the synthetic benchmark into data/synth if it is missing" in top and "sweeps/topk.py --smoke-test" in top


def test_an_unknown_sweep_lists_the_sweeps(capsys):
    assert main(["sweep", "nope"]) == 2
    line = error_line(capsys)
    assert "sweeps/nope.py: no such sweep script; the sweeps are " in line and "topk" in line and "label_shift" in line


def test_the_slurm_launcher_names_a_missing_script_in_one_line(tmp_path):
    done = subprocess.run([PYTHON, str(ROOT / "cluster" / "slurm.py"), "sweeps/nope.py", "--smoke-test"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "slurm.py: error: sweeps/nope.py: no such sweep script"


def test_a_valid_manifest_still_reads(toy_dataset, capsys):
    assert main(["validate", str(toy_dataset)]) == 0
    manifest = json.loads((toy_dataset / "manifest.json").read_text())
    assert capsys.readouterr().out.strip() == f"OK: {len(manifest['shards'])} shards match {toy_dataset}/manifest.json"
