"""nnunet_mm.io.safe_load: checkpoints and nnU-Net's .pkl files are read without running code from them; a crafted
file is refused naming it, a cut one is reported as unreadable, and trusted folders are the documented escape hatch
(issue 17)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_mm.io.safe_load import (TRUSTED_FOLDERS_VARIABLE, UnreadableFileError, UntrustedContentError,
                                    load_pickle_file, load_torch_file, verify_model_folder)


class _Payload:
    """Unpickling it creates ``marker`` (what a crafted file would do with a shell command)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return Path(self.marker).touch, ()


def test_nnunet_style_properties_and_checkpoints_load(tmp_path):
    properties = {"spacing": [1.0, 0.5], "shape_before_cropping": (4, 8), "class_locations": {1: np.zeros((3, 4),
                  dtype=np.int64)}, "sitk_stuff": {"origin": (0.0, 0.0)}, "mean": np.float64(2.5)}
    (tmp_path / "case.pkl").write_bytes(pickle.dumps(properties))
    loaded = load_pickle_file(tmp_path / "case.pkl")
    assert loaded["mean"] == 2.5 and loaded["class_locations"][1].shape == (3, 4)
    torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.3), "device": torch.device("cpu"),
                "logging": {"dice": [np.float32(0.5)]}}, tmp_path / "checkpoint.pth")
    assert load_torch_file(tmp_path / "checkpoint.pth")["_best_ema"] == 0.3


@pytest.mark.parametrize("kind", ["pkl", "pth"])
def test_a_crafted_file_is_refused_and_its_code_never_runs(tmp_path, kind):
    marker = tmp_path / "code_ran"
    file = tmp_path / f"crafted.{kind}"
    if kind == "pkl":
        file.write_bytes(pickle.dumps({"spacing": _Payload(marker)}))
        load = load_pickle_file
    else:
        torch.save({"network_weights": _Payload(marker)}, file)
        load = load_torch_file
    with pytest.raises(UntrustedContentError, match=rf"{file.name}: refused to load.*{TRUSTED_FOLDERS_VARIABLE}"):
        load(file)
    assert not marker.exists()


def test_a_trusted_folder_loads_anything(tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    file = tmp_path / "trusted" / "custom.pkl"
    file.parent.mkdir()
    file.write_bytes(pickle.dumps(_Payload(marker)))
    monkeypatch.setenv(TRUSTED_FOLDERS_VARIABLE, str(file.parent))
    load_pickle_file(file)
    assert marker.exists()


@pytest.mark.parametrize("cut", [0, 10, 0.5, -2])
def test_cut_files_are_unreadable_not_untrusted(tmp_path, cut):
    torch.save({"w": torch.zeros(500)}, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    (tmp_path / "cut.pth").write_bytes(data[:end])
    with pytest.raises(UnreadableFileError, match="cut.pth"):
        load_torch_file(tmp_path / "cut.pth")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps({"a": list(range(100))})[: max(end, 1) % 200])
    with pytest.raises(UnreadableFileError, match="cut.pkl"):
        load_pickle_file(tmp_path / "cut.pkl")


def test_model_folder_check_names_the_missing_or_crafted_checkpoint(tmp_path):
    (tmp_path / "fold_0").mkdir()
    with pytest.raises(FileNotFoundError, match=r"fold_0/checkpoint_final.pth: no such checkpoint"):
        verify_model_folder(tmp_path, [0], "checkpoint_final.pth")
    torch.save({"network_weights": _Payload(tmp_path / "x")}, tmp_path / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(UntrustedContentError, match="fold_0/checkpoint_final.pth"):
        verify_model_folder(tmp_path, [0], "checkpoint_final.pth")


def test_preprocessed_readers_refuse_a_crafted_case_pkl(trainer_kit, tmp_path):
    """synth-stats and the synthesis models read preprocessed cases through open_preprocessed_cases."""
    from nnunet_mm.io.preprocessed import open_preprocessed_cases
    from nnunet_mm.synthesis.statistics import preprocessed_cases

    folder = trainer_kit.preprocessed / "nnUNetPlans_2d"
    assert len(list(preprocessed_cases(folder))) == len(trainer_kit.case_ids)
    crafted = sorted(folder.glob("*.pkl"))[0]
    shutil.copy(crafted, tmp_path / "original.pkl")
    marker = tmp_path / "code_ran"
    crafted.write_bytes(pickle.dumps({**pickle.loads((tmp_path / "original.pkl").read_bytes()),
                                      "spacing": _Payload(marker)}))
    with pytest.raises(UntrustedContentError, match=crafted.name):
        open_preprocessed_cases(folder)
    with pytest.raises(UntrustedContentError, match=crafted.name):
        list(preprocessed_cases(folder))
    assert not marker.exists()
