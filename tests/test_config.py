import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.config import ConfigError, TrialConfig, load_config, save_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config()
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert load_config(path).hash() == cfg.hash()


def test_the_number_of_workers_is_part_of_the_trial():
    assert load_config(None, ["resources.workers_per_trial=2"]).hash() != load_config().hash()


def test_dotted_overrides_apply_on_top_of_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  backbone: cnn\nalign:\n  topk: 3\n")
    cfg = load_config(path, overrides=["model.backbone=resnet18", "align.topk=8", "optim.lr=0.01"])
    assert (cfg.model.backbone, cfg.align.topk, cfg.optim.lr) == ("resnet18", 8, 0.01)
    assert load_config(path, overrides={"align.method": "laplacian"}).align.method == "laplacian"


@pytest.mark.parametrize(
    "override, message",
    [
        ("align.topk=0", "align.topk: must be >= 1, got 0"),
        ("align.topkk=3", "align.topkk: unknown key"),
        ("optim.lr=fast", "optim.lr"),
        ("model.backbone=vgg", "model.backbone: unknown backbone 'vgg'"),
        ("model.group=E2", "model.group: must be C<N>"),
        ("align.method=wasserstein", "align.method: unknown alignment method"),
        ("schedules.blur.kind=zigzag", "schedules.blur.kind: unknown schedule"),
        ("selection.rule=oracle", "selection.rule: 'oracle' reads target test labels"),
        ("optim.warmup_epochs=30", "optim: warmup_epochs (30) must be < epochs (20)"),
        ("nosuch.key=1", "nosuch: not a config section"),
        ("resources.workers_per_trial=0", "resources.workers_per_trial: must be >= 1, got 0"),
        ("compute.precision=fp16", "compute.precision"),
        ("compute.compile=yes", "compute.compile"),
    ],
)
def test_bad_values_name_the_dotted_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_hash_ignores_key_order_and_tracks_values(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("seed: 3\noptim:\n  lr: 0.01\n  epochs: 5\n")
    b.write_text("optim:\n  epochs: 5\n  lr: 0.01\nseed: 3\n")
    assert load_config(a).hash() == load_config(b).hash()
    assert load_config(a).hash() != load_config(a, ["seed=4"]).hash()
    assert load_config(a).hash_without_seed() == load_config(a, ["seed=4"]).hash_without_seed()
    assert load_config(a).hash() == load_config(a, ["tracking.experiment=elsewhere", "tracking.run_name=x"]).hash()


def test_hash_is_stable_across_processes():
    code = "from galaxy_da.config import load_config; print(load_config(overrides=['align.topk=7']).hash())"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert outputs == {load_config(overrides=["align.topk=7"]).hash() + "\n"}


def test_flat_view_uses_dotted_paths():
    flat = TrialConfig().flat()
    assert flat["align.topk"] == 5 and flat["schedules.blur.kind"] == "constant"


def test_an_unknown_key_gets_the_nearest_known_key():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["align.topkk=3"])
    assert "align.topkk: unknown key; did you mean align.topk?" in str(info.value)
    with pytest.raises(ConfigError, match=r"alin: not a config section; did you mean align\?"):
        load_config(overrides=["alin.topk=3"])


def test_a_problem_is_blamed_on_where_it_came_from(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["align.topkk=3"])
    lines = str(info.value).splitlines()
    assert f"  {path}: optim.lrr: unknown key; did you mean optim.lr?" in lines
    assert "  override align.topkk=3: align.topkk: unknown key; did you mean align.topk?" in lines
    with pytest.raises(ConfigError) as info:  # one problem: one line, naming the override, not the file
        load_config(None, ["optim.warmup_epochs=30"])
    assert str(info.value) == "override optim.warmup_epochs=30: optim: warmup_epochs (30) must be < epochs (20)"


def test_a_config_error_on_the_command_line_comes_back_before_torch_is_imported():
    """`galaxy-da train` validates the config before importing torch, scikit-learn, Ray or MLflow (7-9 s of imports)."""
    code = (
        "import sys; from galaxy_da.cli import main; "
        "status = main(['train', '--config', 'configs/smoke.yaml', 'align.topkk=3']); "
        "print(status, [m for m in ('torch', 'sklearn', 'ray', 'mlflow', 'geomloss', 'ot') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr
    assert done.stderr.strip() == "galaxy-da train: error: override align.topkk=3: align.topkk: unknown key; did you mean align.topk?"


def test_compile_off_is_off_from_an_override_and_from_a_yaml_file(tmp_path):
    """YAML 1.1 reads `off` as False; `compute.compile` allows the word `off`, so `off` it is."""
    path = tmp_path / "cfg.yaml"
    path.write_text("compute: {compile: off}\n")
    assert load_config(None, ["compute.compile=off"]).compute.compile == "off"
    assert load_config(path).compute.compile == "off"
    assert load_config(path, ["compute.compile=inductor"]).compute.compile == "inductor"


def boolean_word_options(model=TrialConfig, prefix=""):
    """(dotted key, word) for every option whose allowed words include one that YAML 1.1 reads as a boolean."""
    from typing import Literal, get_args, get_origin

    from pydantic import BaseModel

    def words(annotation):
        if get_origin(annotation) is Literal:
            return list(get_args(annotation))
        return [word for member in get_args(annotation) for word in words(member)]

    found = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += boolean_word_options(field.annotation, f"{prefix}{name}.")
        found += [(f"{prefix}{name}", word) for word in words(field.annotation) if word in ("on", "off", "yes", "no", "true", "false")]
    return found


@pytest.mark.parametrize("key, word", boolean_word_options())
def test_every_option_word_that_yaml_reads_as_a_boolean_is_kept(key, word, tmp_path):
    text = word
    for part in reversed(key.split(".")):
        text = f"{{{part}: {text}}}"  # compute.compile, off -> {compute: {compile: off}}
    path = tmp_path / "cfg.yaml"
    path.write_text(text + "\n")
    for cfg in (load_config(None, [f"{key}={word}"]), load_config(path)):
        assert cfg.flat()[key] == word


def test_a_boolean_for_a_word_option_says_yaml_read_it_as_one():
    with pytest.raises(ConfigError, match=r"compute.precision: .*got False \(YAML reads yes/no/on/off/true/false as booleans\)"):
        load_config(None, ["compute.precision=off"])
