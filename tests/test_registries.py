"""The lazy registries: names without imports, and every entry resolves to what it names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from galaxy_da.registries import ALIGNMENT_METHODS, BACKBONES, LazyRegistry


def test_names_and_membership_import_nothing():
    code = (
        "import sys; from galaxy_da.registries import ALIGNMENT_METHODS, BACKBONES; "
        "assert 'cnn' in BACKBONES and 'laplacian' in ALIGNMENT_METHODS and 'vgg' not in BACKBONES; "
        "print(sorted(BACKBONES), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['cnn', 'resnet18', 'steerable'] False"


@pytest.mark.parametrize("registry", [BACKBONES, ALIGNMENT_METHODS], ids=["backbones", "alignment"])
def test_every_entry_resolves_to_a_callable_with_a_docstring(registry):
    for name in registry:
        assert callable(registry[name]) and registry[name].__doc__, name


def test_an_entry_can_be_an_object_and_is_looked_up_once():
    registry = LazyRegistry({"json_dumps": "json:dumps"})
    registry["len"] = len
    import json

    assert registry["json_dumps"] is json.dumps and registry["len"] is len and len(registry) == 2
