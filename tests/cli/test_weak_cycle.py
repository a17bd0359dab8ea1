"""WeakLabelTrainer: the whole weak-label cycle through the plugin's and nnU-Net's commands.

ISIC-like images with image labels only → ``nnunet_mm weak-train-gan`` → ``nnunet_mm weak-export`` (pseudo masks,
ignore label declared) → planning → ``nnUNetv2_train -tr WeakLabelTrainer_debug`` (teacher, consistency, one
refinement, final validation through nnU-Net's predictor) → the teacher restored from the checkpoint (``--c``'s
path).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mm.cli.main import main as nnunet_mm

pytestmark = pytest.mark.slow


@pytest.fixture
def one_torch_thread():
    """The GAN's small convolutions run tens of times slower on torch's default thread pool on a shared 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_weak_label_cycle_gan_export_train_resume(cli, plan_in_process, one_torch_thread):
    from nnunet_mm.weak.synthetic import write_skin_lesion_dataset

    write_skin_lesion_dataset(cli.raw, dataset_id=920, num_diseased=6, num_normal=4, size=32)
    gan = cli.results / "gan"
    tiny = ["--size", "16", "--base-channels", "4", "--res-blocks", "1", "--discriminator-channels", "4"]
    assert nnunet_mm(["weak-train-gan", "-d", "920", "-o", str(gan), "--iterations", "2", *tiny, "-device", "cpu"]) == 0
    assert nnunet_mm(["weak-train-gan", "-d", "920", "-o", str(gan), "--iterations", "3", *tiny,
                      "-device", "cpu", "--continue"]) == 0
    assert torch.load(gan / "cltn_checkpoint.pt", weights_only=True)["iteration"] == 3
    assert nnunet_mm(["weak-export", "-d", "920", "-m", str(gan), "--target-id", "921", "-device", "cpu"]) == 0
    target = cli.raw / "Dataset921_SkinBlobsPseudoMasks"
    assert json.loads((target / "dataset.json").read_text(encoding="utf-8"))["labels"]["ignore"] == 2

    plan_in_process(921, ("2d",))
    cli.run("nnUNetv2_train", "921", "2d", "0", "-tr", "WeakLabelTrainer_debug", "-device", "cpu")

    fold = cli.results / target.name / "WeakLabelTrainer_debug__nnUNetPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "4 normal case(s) trained as all background" in log
    assert "nnunet_mm: refined" in log
    consistency = [float(line.split("consistency ")[1].split()[0]) for line in log.splitlines()
                   if "nnunet_mm: consistency" in line]
    assert len(consistency) == 2 and all(value > 0 for value in consistency)
    refined = sorted((fold / "refined_labels").glob("*.npy"))
    assert refined and all(not p.name.startswith("skin_00" + str(i)) for p in refined for i in range(6, 10))
    teacher_file = fold / "checkpoint_final.pth.teacher.safetensors"
    assert teacher_file.is_file() and not (fold / "checkpoint_latest.pth.teacher.safetensors").exists()

    # the continue path: a new trainer restores the teacher saved beside the checkpoint, not the student
    from safetensors.torch import load_file

    from nnunet_mm.weak.trainer import WeakLabelTrainer_debug
    plans = json.loads((fold.parent / "plans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = True
    trainer = WeakLabelTrainer_debug(plans, "2d", 0, json.loads((fold.parent / "dataset.json").read_text(encoding="utf-8")),
                                     torch.device("cpu"))
    trainer.load_checkpoint(str(fold / "checkpoint_final.pth"))
    saved = load_file(str(teacher_file))
    teacher, student = trainer.teacher.state_dict(), trainer.student_network.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(teacher[key], value)
    assert any(not torch.equal(student[k], saved[k]) for k in saved if saved[k].is_floating_point())

    # nnU-Net's own predictor ran the final validation (sliding window, export) on the student
    validation = sorted((fold / "validation").glob("*.png"))
    assert len(validation) == 2
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(validation[0])))
    assert prediction.shape == (32, 32) and set(np.unique(prediction)) <= {0, 1}
