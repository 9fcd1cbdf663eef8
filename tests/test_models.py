"""Backbones: shapes, gradients, exact steerable invariance, torchvision-compatible ResNet-18."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from galaxy_da.config import ModelConfig
from galaxy_da.models.registry import BACKBONES, build_model
from galaxy_da.models.steerable import BLOCKS, group_space, symmetric_padding

NUM_CLASSES = 3
IN_CHANNELS = 3
STEERABLE_WIDTH = 4  # invariance does not depend on the width; small keeps the tests fast


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(image_size: int = 65, **fields) -> torch.nn.Module:
    cfg = ModelConfig(**fields)
    return build_model(cfg, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, image_size=image_size)


def settle_batchnorm(model: torch.nn.Module, size: int, steps: int = 3) -> None:
    """Give BatchNorm non-trivial running statistics, so eval mode is a real test."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(8, IN_CHANNELS, size, size) * 2 + 0.5)
    model.eval()


def test_registry_has_exactly_the_documented_backbones():
    assert set(BACKBONES) == {"cnn", "steerable", "resnet18"}


def test_importing_the_registry_does_not_import_e2cnn():
    code = "import sys, galaxy_da.models.registry, galaxy_da.config; print('e2cnn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


BACKBONE_CASES = [
    pytest.param({"backbone": "cnn", "width": 4}, 32, id="cnn"),
    pytest.param({"backbone": "resnet18"}, 512, id="resnet18"),
    pytest.param({"backbone": "steerable", "group": "C8", "width": STEERABLE_WIDTH}, 4 * STEERABLE_WIDTH, id="steerable-C8"),
    pytest.param({"backbone": "steerable", "group": "D4", "width": STEERABLE_WIDTH}, 4 * STEERABLE_WIDTH, id="steerable-D4"),
]


@pytest.mark.filterwarnings("ignore:steerable backbone at an even image size")
@pytest.mark.parametrize("fields, feature_dim", BACKBONE_CASES)
@pytest.mark.parametrize("size", [65, 64])
def test_forward_shapes_and_finite_gradients(fields, feature_dim, size):
    model = make_model(image_size=size, **fields)
    model.train()
    logits, features = model(torch.randn(4, IN_CHANNELS, size, size))
    assert model.feature_dim == feature_dim
    assert logits.shape == (4, NUM_CLASSES)
    assert features.shape == (4, feature_dim)
    (logits.logsumexp(dim=1).mean() + features.pow(2).mean()).backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, parameter in trainable:
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


def test_head_dropout_comes_from_the_config():
    model = make_model(backbone="cnn", width=2, dropout=0.45)
    dropouts = [m for m in model.head.modules() if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in dropouts] == [0.45]


def test_class_scales_multiply_logits_and_start_at_one():
    torch.manual_seed(1)
    plain = make_model(backbone="cnn", width=2)
    torch.manual_seed(1)
    scaled = make_model(backbone="cnn", width=2, class_scales=True)
    assert "head.class_scales" not in dict(plain.named_parameters())
    scales = dict(scaled.named_parameters())["head.class_scales"]
    assert torch.equal(scales.detach(), torch.ones(NUM_CLASSES))
    plain.eval(), scaled.eval()
    x = torch.randn(5, IN_CHANNELS, 16, 16)
    with torch.no_grad():
        scales.copy_(torch.tensor([0.5, 2.0, -1.0]))
        expected = plain(x)[0] * torch.tensor([0.5, 2.0, -1.0])
        assert torch.allclose(scaled(x)[0], expected, atol=1e-6)


# --------------------------------------------------------------------------- steerable


def test_symmetric_padding_keeps_odd_sizes_odd_and_the_sampled_grid_centred():
    for input_size in range(5, 202, 2):
        size = input_size
        for kernel, stride, _ in BLOCKS:
            pad = symmetric_padding(size, kernel, stride)
            out = (size + 2 * pad - kernel) // stride + 1
            first_centre = (kernel - 1) / 2 - pad
            last_centre = first_centre + (out - 1) * stride
            assert first_centre + last_centre == size - 1, (input_size, size, kernel, stride)
            assert out % 2 == 1, (input_size, size, kernel, stride)
            size = out


DIHEDRAL = {
    "rot90": lambda x: torch.rot90(x, 1, dims=(2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, dims=(2, 3)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(2, 3)),
    "hflip": lambda x: torch.flip(x, dims=(3,)),
    "vflip": lambda x: torch.flip(x, dims=(2,)),
    "transpose": lambda x: x.transpose(2, 3),
}
ROTATIONS = ("rot90", "rot180", "rot270")


@pytest.mark.parametrize(
    "group, size, symmetries",
    [
        ("C8", 65, ROTATIONS),
        ("C4", 65, ROTATIONS),
        ("D4", 65, tuple(DIHEDRAL)),
        ("C4", 63, ROTATIONS),  # 63 = 3 (mod 4): the extra-padding branch
        ("C2", 33, ("rot180",)),
        ("D1", 33, ("hflip",)),
    ],
)
def test_steerable_logits_are_exactly_invariant_on_odd_grids(group, size, symmetries):
    model = make_model(backbone="steerable", group=group, width=STEERABLE_WIDTH)
    settle_batchnorm(model, size)
    x = torch.rand(3, IN_CHANNELS, size, size)
    with torch.no_grad():
        logits, features = model(x)
        assert features.abs().max() > 1e-3  # not invariant by being zero
        for name in symmetries:
            moved_logits, moved_features = model(DIHEDRAL[name](x))
            assert torch.allclose(moved_logits, logits, atol=1e-4, rtol=0), name
            assert torch.allclose(moved_features, features, atol=1e-4, rtol=0), name


def test_rotation_only_group_is_not_flip_invariant():
    model = make_model(backbone="steerable", group="C4", width=STEERABLE_WIDTH)
    settle_batchnorm(model, 65)
    x = torch.rand(3, IN_CHANNELS, 65, 65)
    with torch.no_grad():
        assert (model(DIHEDRAL["hflip"](x))[1] - model(x)[1]).abs().max() > 1e-3


def test_steerable_state_dict_is_mode_independent_and_reloads_in_either_mode():
    """e2cnn caches expanded filters in eval mode only; checkpoints must not depend on that."""
    trained = make_model(backbone="steerable", group="C4", width=2)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    x = torch.rand(4, IN_CHANNELS, 33, 33)
    labels = torch.tensor([0, 1, 2, 1])
    for _ in range(3):
        trained.train()
        torch.nn.functional.cross_entropy(trained(x)[0], labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    saved_in_train_mode = {k: v.clone() for k, v in trained.state_dict().items()}
    trained.eval()
    assert list(trained.state_dict()) == list(saved_in_train_mode)
    with torch.no_grad():
        expected = trained(x)[0]
        assert torch.isfinite(expected).all()
        untrained = make_model(backbone="steerable", group="C4", width=2).eval()
        assert not torch.allclose(untrained(x)[0], expected, atol=1e-3)  # the weights did move

        loaded_in_eval_mode = make_model(backbone="steerable", group="C4", width=2).eval()
        loaded_in_eval_mode.load_state_dict(saved_in_train_mode)
        assert torch.allclose(loaded_in_eval_mode(x)[0], expected, atol=1e-6)

        loaded_in_train_mode = make_model(backbone="steerable", group="C4", width=2)
        loaded_in_train_mode.load_state_dict(trained.state_dict())
        assert torch.allclose(loaded_in_train_mode.eval()(x)[0], expected, atol=1e-6)


@pytest.mark.parametrize("group, order", [("C8", 8), ("D4", 8), ("C2", 2), ("C1", 1), ("D1", 2), ("D8", 16)])
def test_group_names_map_to_their_gspaces(group, order):
    assert group_space(group).fibergroup.order() == order


def test_flip_groups_differ_from_rotation_groups_of_the_same_order():
    assert group_space("D4").name != group_space("C8").name
    assert group_space("D1").name != group_space("C2").name


def test_trivial_group_builds_a_working_model():
    model = make_model(backbone="steerable", group="C1", width=2)
    logits, features = model(torch.rand(2, IN_CHANNELS, 33, 33))
    assert logits.shape == (2, NUM_CLASSES) and features.shape == (2, 8)


@pytest.mark.parametrize("group", ["E2", "SO2", "C0", "d4", ""])
def test_unknown_group_raises_naming_the_config_key(group):
    cfg = ModelConfig.model_construct(**{**ModelConfig().model_dump(), "backbone": "steerable", "group": group})
    with pytest.raises(ValueError, match="model.group"):
        build_model(cfg, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, image_size=65)


def test_even_image_size_warns_for_steerable():
    with pytest.warns(UserWarning, match="even image size"):
        build_model(
            ModelConfig(backbone="steerable", group="C4", width=1), NUM_CLASSES, IN_CHANNELS, image_size=64
        )


# --------------------------------------------------------------------------- resnet18


def torchvision_resnet18_keys() -> list[str]:
    """torchvision.models.resnet18().state_dict() keys, in order, without ``fc.*``."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight"] + [f"bn1.{name}" for name in bn]
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            keys += [f"{prefix}.conv1.weight"] + [f"{prefix}.bn1.{name}" for name in bn]
            keys += [f"{prefix}.conv2.weight"] + [f"{prefix}.bn2.{name}" for name in bn]
            if layer > 1 and block == 0:
                keys += [f"{prefix}.downsample.0.weight"] + [f"{prefix}.downsample.1.{name}" for name in bn]
    return keys


def test_resnet18_encoder_keys_are_torchvisions():
    model = make_model(backbone="resnet18")
    assert list(model.encoder.state_dict()) == torchvision_resnet18_keys()
    assert sum(p.numel() for p in model.encoder.parameters()) == 11_176_512  # torchvision's 11_689_512 minus fc


def write_torchvision_checkpoint(path, *, drop=(), extra=None) -> dict[str, torch.Tensor]:
    """A torchvision-format file: random encoder weights and statistics plus ``fc.*``."""
    torch.manual_seed(123)
    state = {
        key: (value.float().uniform_(0.5, 1.5).to(value.dtype) if value.is_floating_point() else value + 7)
        for key, value in make_model(backbone="resnet18").encoder.state_dict().items()
    }
    checkpoint = {key: value for key, value in state.items() if key not in drop}
    checkpoint.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)
    return state


def test_torchvision_checkpoint_loads_through_pretrained_path(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = write_torchvision_checkpoint(path)
    model = make_model(backbone="resnet18", pretrained_path=str(path))
    loaded = model.encoder.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_old_checkpoints_without_batch_counters_load(tmp_path):
    path = tmp_path / "old.pth"
    counters = [key for key in torchvision_resnet18_keys() if key.endswith("num_batches_tracked")]
    state = write_torchvision_checkpoint(path, drop=counters)
    model = make_model(backbone="resnet18", pretrained_path=str(path))
    assert torch.equal(model.encoder.state_dict()["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])


@pytest.mark.parametrize(
    "drop, extra, named",
    [
        ((), {"layer5.0.conv1.weight": torch.zeros(1)}, "layer5.0.conv1.weight"),
        (("layer2.0.downsample.0.weight",), None, "layer2.0.downsample.0.weight"),
        ((), {"conv1.weight": torch.zeros(64, 1, 7, 7)}, "conv1.weight"),
    ],
    ids=["unexpected", "missing", "shape"],
)
def test_bad_checkpoint_raises_naming_key_and_file(tmp_path, drop, extra, named):
    path = tmp_path / "bad.pth"
    write_torchvision_checkpoint(path, drop=drop, extra=extra)
    with pytest.raises(ValueError) as info:
        make_model(backbone="resnet18", pretrained_path=str(path))
    assert named in str(info.value) and str(path) in str(info.value)


def test_trainable_stages_freeze_stem_and_early_stages_with_their_batchnorm(tmp_path):
    path = tmp_path / "resnet18.pth"
    write_torchvision_checkpoint(path)
    model = make_model(backbone="resnet18", pretrained_path=str(path), trainable_stages=2)
    frozen_prefixes = ("encoder.conv1.", "encoder.bn1.", "encoder.layer1.", "encoder.layer2.")
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith(frozen_prefixes)), name

    model.train()
    assert not model.encoder.layer2[1].bn2.training and not model.encoder.bn1.training
    assert model.encoder.layer3[0].bn1.training and model.head.training
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}
    logits, _ = model(torch.randn(4, IN_CHANNELS, 64, 64))
    logits.sum().backward()
    after = model.encoder.state_dict()
    for key, value in before.items():
        changed = not torch.equal(after[key], value)
        assert changed == key.startswith(("layer3.", "layer4.")), key
    assert model.encoder.conv1.weight.grad is None
    assert model.encoder.layer3[0].conv1.weight.grad is not None


def test_all_stages_frozen_leaves_only_the_head_training(tmp_path):
    path = tmp_path / "resnet18.pth"
    write_torchvision_checkpoint(path)
    model = make_model(backbone="resnet18", pretrained_path=str(path), trainable_stages=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("head.") for name in trainable)


def test_random_init_resnet_trains_everything_whatever_trainable_stages():
    model = make_model(backbone="resnet18", trainable_stages=1)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(m.training for m in model.modules())
