"""SynthTumorTrainer through the commands: ``nnunet_mm synth-stats`` → ``nnUNetv2_train -tr SynthTumorTrainer_debug``
(2d, with nnU-Net's final validation) → ``nnunet_mm keep-tumours-in-liver`` on the exported segmentations →
``nnunet_mm synth-preview``."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.cli.main import main as nnunet_mm
from nnunet_mm.synthesis.statistics import TumourContrastStatistics

pytestmark = pytest.mark.slow


def test_cli_cycle_stats_train_predict_postprocess_and_preview(cli, two_phase_liver):
    cli.adopt(two_phase_liver)
    # every sample with liver gets tumours (at the default p = 0.5, the 8 samples of an epoch of the debug trainer
    # get none now and then), and the plugin's draws are seeded
    cli.add_to_block(two_phase_liver.name, seed=0, synthesis={"probability": 1.0})
    assert nnunet_mm(["synth-stats", "-d", "590", "-c", "2d"]) == 0
    stats_file = cli.preprocessed / two_phase_liver.name / "nnunet_mm_synthesis" / "tumour_contrast_nnUNetPlans_2d.json"
    statistics = TumourContrastStatistics.load(stats_file)
    assert statistics.phase_names == ("pv", "art") and len(statistics.cases) >= 4
    assert nnunet_mm(["synth-stats", "-d", "590", "-c", "2d"]) == 1  # refuses to overwrite

    cli.run("nnUNetv2_train", "590", "2d", "0", "-tr", "SynthTumorTrainer_debug", "-device", "cpu")
    fold = cli.results / two_phase_liver.name / "SynthTumorTrainer_debug__nnUNetPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert f"tumour contrast statistics from {stats_file}" in log
    assert "0.5*CE" in log
    fractions = [float(line.split("synthetic tumours in ")[1].split(" %")[0]) for line in log.splitlines()
                 if "synthetic tumours in" in line]
    assert len(fractions) == 2 and all(0 < f <= 100 for f in fractions)
    assert (fold / "validation" / "summary.json").is_file()

    # nnUNetv2_predict runs stock nnU-Net on an unchanged network (as for MultiModalTrainer); the final validation
    # above already predicted and exported the validation cases with nnU-Net's predictor: post-process those
    validation = fold / "validation"
    prediction = next(validation.glob("*.nii.gz"))
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
    array[:2, :3, :3] = 0  # clear every neighbour (also in the next slice)
    array[0, 1, 1] = 2  # a tumour voxel with no liver around it
    sitk.WriteImage(sitk.GetImageFromArray(array), str(prediction))
    labels = ["--liver-label", "1", "--tumour-label", "2"]
    post = cli.results / "post"
    assert nnunet_mm(["keep-tumours-in-liver", "-i", str(validation), "-o", str(post), *labels]) == 0
    cleaned = sitk.GetArrayFromImage(sitk.ReadImage(str(post / prediction.name)))
    assert cleaned[0, 1, 1] == 0 and np.array_equal(cleaned[array != 2], array[array != 2])
    assert nnunet_mm(["keep-tumours-in-liver", "-i", str(validation), "-o", str(post), *labels]) == 1

    png = cli.results / "grid.png"
    assert nnunet_mm(["synth-preview", "-d", "590", "-c", "2d", "-o", str(png), "-n", "2", "-device", "cpu"]) == 0
    assert png.stat().st_size > 20_000
