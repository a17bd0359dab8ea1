"""Checkpoints that survive a kill (issue 17): written atomically, read without running code, and replaced by the
newest readable checkpoint of the run when the one asked for is empty or cut -- for every trainer (they all save
through MultiModalTrainer), with the teacher of the mean-teacher trainers beside it."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_mm.io.safe_load import UnreadableFileError
from nnunet_mm.training.checkpoints import read_checkpoint, staged_checkpoint
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer


class _Crafted:
    """Pickles as a call of ``os.system`` -- what a crafted checkpoint does."""

    def __reduce__(self):
        return os.system, ("echo crafted",)


def _save(trainer, name: str, epoch: int) -> Path:
    trainer.current_epoch = epoch
    trainer._best_ema = np.float64(0.25)  # nnU-Net stores numpy scalars: they must load without pickled code
    path = Path(trainer.output_folder) / name
    trainer.save_checkpoint(str(path))
    return path


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(trainer_kit, monkeypatch):
    trainer = trainer_kit.trainer(MultiModalTrainer)
    latest = _save(trainer, "checkpoint_latest.pth", 3)
    before = latest.read_bytes()

    def killed(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise KeyboardInterrupt  # the kill arrives mid-write

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(trainer, "checkpoint_latest.pth", 4)
    assert latest.read_bytes() == before
    assert sorted(p.name for p in latest.parent.iterdir() if "checkpoint" in p.name) == ["checkpoint_latest.pth"]


@pytest.mark.parametrize("damage", ["empty", "cut"])
def test_continue_falls_back_to_the_newest_readable_checkpoint_and_says_so(trainer_kit, capsys, damage):
    trainer = trainer_kit.trainer(MultiModalTrainer)
    best = _save(trainer, "checkpoint_best.pth", 2)
    time.sleep(0.01)
    latest = _save(trainer, "checkpoint_latest.pth", 5)
    content = latest.read_bytes()
    latest.write_bytes(b"" if damage == "empty" else content[: len(content) // 2])

    resumed = trainer_kit.trainer(MultiModalTrainer)
    resumed.load_checkpoint(str(latest))
    assert resumed.current_epoch == 3  # nnU-Net stores epoch + 1
    assert resumed.loaded_checkpoint_file == best
    out = capsys.readouterr().out
    assert "checkpoint_latest.pth" in out and "Continuing from" in out and "checkpoint_best.pth" in out


def test_no_readable_checkpoint_is_an_error_line_naming_the_file(trainer_kit):
    trainer = trainer_kit.trainer(MultiModalTrainer)
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    latest.parent.mkdir(parents=True, exist_ok=True)
    latest.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        trainer.load_checkpoint(str(latest))
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and str(latest) in message and "empty" in message


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(trainer_kit, tmp_path, monkeypatch):
    trainer = trainer_kit.trainer(MultiModalTrainer)
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    latest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": _Crafted()}, latest)
    ran = []
    monkeypatch.setattr(os, "system", lambda command: ran.append(command))
    with pytest.raises(SystemExit) as exit_info:
        trainer.load_checkpoint(str(latest))
    assert "refused" in str(exit_info.value.code) and str(latest) in str(exit_info.value.code)
    assert ran == []


def test_read_checkpoint_names_every_file_it_tried(tmp_path):
    for name in ("checkpoint_latest.pth", "checkpoint_best.pth"):
        (tmp_path / name).write_bytes(b"PK\x03\x04broken")
    with pytest.raises(UnreadableFileError) as error:
        read_checkpoint(tmp_path / "checkpoint_latest.pth")
    assert "checkpoint_latest.pth" in str(error.value) and "checkpoint_best.pth" in str(error.value)


def test_staged_checkpoint_replaces_in_one_rename(tmp_path):
    target = tmp_path / "checkpoint_latest.pth"
    torch.save({"a": 1}, target)
    with staged_checkpoint(target) as partial:
        assert partial.parent == tmp_path and partial != target
        torch.save({"a": 2}, partial)
        assert torch.load(target, weights_only=True) == {"a": 1}
    assert torch.load(target, weights_only=True) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pth"]


def test_mean_teacher_is_saved_beside_the_checkpoint_and_restored(trainer_kit):
    from nnunet_mm.cmc.mean_teacher import CMCMeanTeacherTrainer

    trainer = trainer_kit.trainer(CMCMeanTeacherTrainer)
    with torch.no_grad():
        for parameter in trainer.teacher.parameters():
            parameter.add_(1.0)
    latest = _save(trainer, "checkpoint_latest.pth", 1)
    assert Path(f"{latest}.teacher.safetensors").is_file()
    resumed = trainer_kit.trainer(CMCMeanTeacherTrainer)
    resumed.load_checkpoint(str(latest))
    for saved, restored in zip(trainer.teacher.state_dict().values(), resumed.teacher.state_dict().values()):
        torch.testing.assert_close(saved, restored)
    student = resumed.unwrapped_network.state_dict()
    assert any(not torch.equal(student[k], v) for k, v in resumed.teacher.state_dict().items()
               if v.is_floating_point())
