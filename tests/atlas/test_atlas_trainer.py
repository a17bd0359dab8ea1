"""MASPriorTrainer: the CLI cycle `nnunet_mm mas` → plan → `nnUNetv2_train -tr MASPriorTrainer_debug` →
`nnUNetv2_predict` on the written imagesTs; and its augmentation hooks without an nnU-Net run."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets
from nnunet_mm.atlas.prior_augmentation import ImageChannelsOnly
from nnunet_mm.settings.multimodal import MultiModalSettings
from nnunet_mm.atlas.trainer import MASPriorTrainer

PRIOR_DATASET_JSON = {"channel_names": {"0": "MR", "1": "noNorm", "2": "noNorm"},
                      "labels": {"background": 0, "liver": 1, "tumor": 2},
                      "nnunet_mm": {"modalities": {"0": "MR", "1": "atlas_prior:liver", "2": "atlas_prior:tumor"}}}


def _trainer_without_nnunet() -> MASPriorTrainer:
    trainer = MASPriorTrainer.__new__(MASPriorTrainer)
    trainer.prior_channels, trainer.num_image_channels = [1, 2], 1
    trainer.mm_settings = dataclasses.replace(MultiModalSettings.from_dataset_json(PRIOR_DATASET_JSON),
                                              num_channels=1)
    trainer.augmentation_generator = torch.Generator().manual_seed(0)
    trainer.prior_dropout_probability = 1.0
    return trainer


def test_device_augmentation_drops_priors_and_keeps_the_image():
    trainer = _trainer_without_nnunet()
    data = torch.rand(2, 3, 16, 16) + 0.1
    out, _ = trainer.augment_multimodal_with_draw(data)
    assert torch.equal(out[:, 0], data[:, 0]) and torch.all(out[:, 1:] == 0)


def test_training_transforms_restrict_intensity_transforms_to_the_image():
    trainer = _trainer_without_nnunet()
    pipeline = trainer.get_training_transforms((32, 32), (-np.pi, np.pi), None, (0, 1), False,
                                               use_mask_for_norm=[False] * 3, foreground_labels=[1, 2])
    assert sum(isinstance(t, ImageChannelsOnly) for t in pipeline.transforms) == 7


@pytest.mark.slow
def test_mas_prior_trainer_cli_cycle(tmp_path, monkeypatch, quick_fingerprint):
    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"), nnUNet_n_proc_DA="0",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("nnUNet_extTrainer", None)
    write_cross_modality_datasets(tmp_path / "raw", atlas_id=711, target_id=712, num_atlases=2,
                                  num_target_training=5, num_target_test=1, shape_zyx=(8, 32, 32),
                                  spacing_zyx_mm=(4.0, 3.0, 3.0), seed=2)

    def run(*command: str) -> str:
        done = subprocess.run(list(command), env=env, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=600)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, env[name])
    from nnunet_mm.cli.main import main as nnunet_mm_main  # the command line, in this process (saves an import)

    assert nnunet_mm_main(["mas", "-t", "712", "-a", "711", "-o", "713", "-k", "2", "--stages", "rigid,affine",
                           "--iterations", "20", "--fusion", "local"]) == 0
    assert nnunet_mm_main(["mas", "-t", "712", "-a", "711", "-o", "713"]) == 1  # exists: refused without --overwrite
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    quick_fingerprint(713)
    plan_experiments([713])
    preprocess([713], configurations=("2d",), num_processes=(1,))
    run("nnUNetv2_train", "713", "2d", "0", "-tr", "MASPriorTrainer_debug", "-device", "cpu")
    fold = tmp_path / "res" / "Dataset713_PhantomMRTarget_MASPrior" / "MASPriorTrainer_debug__nnUNetPlans__2d"
    log = next((fold / "fold_0").glob("training_log_*.txt")).read_text()
    assert "atlas prior channels [1, 2]" in log
    images = tmp_path / "raw" / "Dataset713_PhantomMRTarget_MASPrior" / "imagesTs"
    assert sorted(p.name for p in images.iterdir()) == [f"target_005_000{c}.nii.gz" for c in range(3)]
    run("nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred"), "-d", "713", "-c", "2d",
        "-tr", "MASPriorTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0")
    prediction = sitk.ReadImage(str(tmp_path / "pred" / "target_005.nii.gz"))
    assert prediction.GetSize() == sitk.ReadImage(str(images / "target_005_0000.nii.gz")).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
