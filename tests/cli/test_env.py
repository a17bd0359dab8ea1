"""``nnunet_mm env``: paths, trainer discovery, the versions of the stack (torch with its CUDA build) and every plugin
trainer as nnU-Net's own lookup finds it."""
from __future__ import annotations

import re
from importlib import metadata

import _nnunet_mm_ext
import pytest

from nnunet_mm.cli.main import main as nnunet_mm

PLUGIN_TRAINERS = {"MultiModalTrainer": "training.multimodal_trainer", "CMGTrainer": "cmg.trainer",
                   "CMCTrainer": "cmc.trainer", "CMCMeanTeacherTrainer": "cmc.mean_teacher",
                   "SynthTumorTrainer": "synthesis.trainer", "WeakLabelTrainer": "weak.trainer",
                   "MASPriorTrainer": "atlas.trainer"}


def _value(out: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)} +: (.*)$", out, re.MULTILINE)
    assert match, f"no line {label!r} in:\n{out}"
    return match.group(1)


def test_env_reports_versions_cuda_and_every_plugin_trainer(monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", _nnunet_mm_ext.trainer_shim_folder())
    assert nnunet_mm(["env"]) == 0
    out = capsys.readouterr().out
    assert _value(out, "hook active") == "yes"
    for distribution, label in (("nnunet_mm", "nnunet_mm"), ("nnunetv2", "nnunetv2"), ("torch", "torch"),
                                ("dynamic_network_architectures", "dynamic_network_architectures"),
                                ("batchgeneratorsv2", "batchgeneratorsv2"), ("SimpleITK", "SimpleITK")):
        assert _value(out, label) == metadata.version(distribution)
    assert re.fullmatch(r"yes, \d+ device\(s\)|no", _value(out, "CUDA available"))
    assert _value(out, "CUDA (torch build)")
    assert _value(out, "MONAI")  # a version, or "not installed"
    for name, module in PLUGIN_TRAINERS.items():
        assert _value(out, name) == f"nnunet_mm.{module}.{name}"
        assert _value(out, f"{name}_debug") == f"nnunet_mm.{module}.{name}_debug"


def test_env_without_the_hook_says_which_trainers_nnunet_misses(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    assert nnunet_mm(["env"]) == 1
    out = capsys.readouterr().out
    assert _value(out, "hook active") == "NO"
    assert _value(out, "CMGTrainer").startswith("NOT FOUND (nnU-Net finds no trainer 'CMGTrainer'")
    assert f"export nnUNet_extTrainer={_nnunet_mm_ext.trainer_shim_folder()}" in out


@pytest.mark.parametrize("label", ["nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"])
def test_env_shows_the_nnunet_paths(label, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(label, str(tmp_path))
    nnunet_mm(["env"])
    assert _value(capsys.readouterr().out, label) == str(tmp_path)
