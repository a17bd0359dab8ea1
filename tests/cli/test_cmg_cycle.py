"""CMGTrainer through nnU-Net's commands: ``nnUNetv2_train -tr CMGTrainer_debug`` (2d), ``--c`` after the end,
``nnUNetv2_predict -tr CMGTrainer_debug`` and ``nnunet_mm cmg-maps`` (in this process)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mm.cli.main import main as nnunet_mm

pytestmark = pytest.mark.slow


def _checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint (our own file, written by the test just before)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def test_cmg_trainer_cli_cycle_in_2d_with_continue(cli, two_phase_liver, monkeypatch):
    cli.adopt(two_phase_liver)
    cli.run("nnUNetv2_train", "590", "2d", "0", "-tr", "CMGTrainer_debug", "-device", "cpu")
    fold = cli.results / two_phase_liver.name / "CMGTrainer_debug__nnUNetPlans__2d" / "fold_0"
    trained = _checkpoint(fold / "checkpoint_final.pth")
    assert any(key.startswith("guidance.") for key in trained["network_weights"])  # a CMG network, not a U-Net
    assert "reference_index" in trained["network_weights"]

    # --c after the last epoch: the CMG network is restored from the final checkpoint, no epoch is added, and
    # nnU-Net's final validation runs again on the restored network
    (fold / "validation" / "summary.json").unlink()
    cli.run("nnUNetv2_train", "590", "2d", "0", "-tr", "CMGTrainer_debug", "-device", "cpu", "--c")
    continued = _checkpoint(fold / "checkpoint_final.pth")
    assert continued["current_epoch"] == trained["current_epoch"] == 2
    for key, value in trained["network_weights"].items():
        assert torch.equal(continued["network_weights"][key], value), key
    assert (fold / "validation" / "summary.json").is_file()

    images = cli.raw / two_phase_liver.name / "imagesTs"
    cli.run("nnUNetv2_predict", "-i", str(images), "-o", str(cli.results / "pred"), "-d", "590", "-c", "2d",
            "-tr", "CMGTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0")
    predictions = sorted((cli.results / "pred").glob("*.nii.gz"))
    assert len(predictions) == 1
    case = predictions[0].name[: -len(".nii.gz")]
    prediction, image = sitk.ReadImage(str(predictions[0])), sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
    assert prediction.GetSize() == image.GetSize() and prediction.GetSpacing() == image.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
    maps = cli.results / "maps.png"
    from figure_checks import capture_saved_figures, figure_texts

    saved = capture_saved_figures(monkeypatch)
    assert nnunet_mm(["cmg-maps", "-i", str(images), "--case", case, "-o", str(maps), "-d", "590", "-c", "2d",
                      "-tr", "CMGTrainer_debug", "-device", "cpu"]) == 0
    assert maps.stat().st_size > 20_000
    texts = figure_texts(saved[-1])  # slice, class names (not numbers) in titles and the prediction legend
    assert any("axial slice" in text and "guidance for tumor" in text for text in texts), texts
    assert {"liver", "tumor"} <= set(texts) and any("level 0 (tumor)" in text for text in texts)
