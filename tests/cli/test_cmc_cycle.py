"""CMCTrainer through the commands: ``nnunet_mm label-fraction`` → planning → ``nnunet_mm preprocess-unlabeled``
(both in this process) → ``nnUNetv2_train -tr CMCTrainer_debug`` (2d) → ``nnUNetv2_predict`` (self-paired inference
on one channel)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.cli.main import main as nnunet_mm

pytestmark = pytest.mark.slow


def test_cmc_trainer_cli_cycle_with_unlabeled_cases(cli, plan_in_process):
    from nnunet_mm.phantom import write_nnunet_raw

    write_nnunet_raw(cli.raw, dataset_id=580, name="Single", num_training=4, num_test=1, seed=2,
                     shape_zyx=(8, 32, 32), spacing_zyx_mm=(4.0, 3.0, 3.0), phases=("pv",))
    assert nnunet_mm(["label-fraction", "-d", "580", "--fraction", "0.5", "--target-id", "581"]) == 0
    plan_in_process(581, ("2d",))
    assert nnunet_mm(["preprocess-unlabeled", "-d", "581", "-c", "2d"]) == 0
    cli.run("nnUNetv2_train", "581", "2d", "0", "-tr", "CMCTrainer_debug", "-device", "cpu")
    fold = next(cli.results.glob("Dataset581_*")) / "CMCTrainer_debug__nnUNetPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text(encoding="utf-8")
    csc = [float(line.split("csc ")[1].split()[0]) for line in log.splitlines() if "nnunet_mm: csc" in line]
    assert len(csc) == 2 and all(value > 0 for value in csc)  # 0 when a step skips the unlabeled cases
    images = next(cli.raw.glob("Dataset581_*")) / "imagesTs"
    cli.run("nnUNetv2_predict", "-i", str(images), "-o", str(cli.results / "pred"), "-d", "581", "-c", "2d",
            "-tr", "CMCTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0")
    predictions = sorted((cli.results / "pred").glob("*.nii.gz"))
    assert len(predictions) == 1
    image = sitk.ReadImage(str(images / predictions[0].name.replace(".nii.gz", "_0000.nii.gz")))
    prediction = sitk.ReadImage(str(predictions[0]))
    assert prediction.GetSize() == image.GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
