"""MASPriorTrainer through the commands: ``nnunet_mm mas`` → planning → ``nnUNetv2_train -tr MASPriorTrainer_debug``
→ ``nnUNetv2_predict`` on the imagesTs that ``mas`` wrote."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets
from nnunet_mm.cli.main import main as nnunet_mm

pytestmark = pytest.mark.slow


def test_mas_prior_trainer_cli_cycle(cli, plan_in_process):
    write_cross_modality_datasets(cli.raw, atlas_id=711, target_id=712, num_atlases=2, num_target_training=5,
                                  num_target_test=1, shape_zyx=(8, 32, 32), spacing_zyx_mm=(4.0, 3.0, 3.0), seed=2)
    assert nnunet_mm(["mas", "-t", "712", "-a", "711", "-o", "713", "-k", "2", "--stages", "rigid,affine",
                      "--iterations", "20", "--fusion", "local"]) == 0
    assert nnunet_mm(["mas", "-t", "712", "-a", "711", "-o", "713"]) == 1  # exists: refused without --overwrite
    plan_in_process(713, ("2d",))
    cli.run("nnUNetv2_train", "713", "2d", "0", "-tr", "MASPriorTrainer_debug", "-device", "cpu")
    fold = cli.results / "Dataset713_PhantomMRTarget_MASPrior" / "MASPriorTrainer_debug__nnUNetPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "atlas prior channels [1, 2]" in log
    images = cli.raw / "Dataset713_PhantomMRTarget_MASPrior" / "imagesTs"
    assert sorted(p.name for p in images.iterdir()) == [f"target_005_000{c}.nii.gz" for c in range(3)]
    cli.run("nnUNetv2_predict", "-i", str(images), "-o", str(cli.results / "pred"), "-d", "713", "-c", "2d",
            "-tr", "MASPriorTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0")
    prediction = sitk.ReadImage(str(cli.results / "pred" / "target_005.nii.gz"))
    assert prediction.GetSize() == sitk.ReadImage(str(images / "target_005_0000.nii.gz")).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
