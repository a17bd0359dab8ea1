"""MASPriorTrainer through the commands: ``nnunet_mm mas`` → planning → ``nnUNetv2_train -tr MASPriorTrainer_debug``
→ ``nnUNetv2_predict`` on the imagesTs that ``mas`` wrote → ``nnunet_mm predict`` on new cases (image only), which
makes their priors as ``mas`` made them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets
from nnunet_mm.cli.main import main as nnunet_mm

pytestmark = pytest.mark.slow


def test_mas_prior_trainer_cli_cycle(cli, plan_in_process, capsys):
    write_cross_modality_datasets(cli.raw, atlas_id=711, target_id=712, num_atlases=2, num_target_training=5,
                                  num_target_test=1, shape_zyx=(8, 32, 32), spacing_zyx_mm=(4.0, 3.0, 3.0), seed=2)
    assert nnunet_mm(["mas", "-d", "712", "-a", "711", "--target-id", "713", "-k", "2", "--stages", "rigid,affine",
                      "--iterations", "20", "--fusion", "local", "-np", "1"]) == 0
    capsys.readouterr()
    # the old spellings still work for one release, with a warning; the dataset exists: refused without --overwrite
    assert nnunet_mm(["mas", "-t", "712", "-a", "711", "-o", "713"]) == 1
    err = capsys.readouterr().err
    assert "nnunet_mm mas: warning: '-t' is deprecated, use '-d'" in err
    assert "nnunet_mm mas: warning: '-o' is deprecated, use '--target-id'" in err
    assert "--overwrite" in err
    mas_folder = cli.raw / "Dataset713_PhantomMRTarget_MASPrior"
    splits = json.loads((mas_folder / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 5 and sorted(c for fold in splits for c in fold["val"]) == [f"target_{i:03d}"
                                                                                      for i in range(5)]
    plan_in_process(713, ("2d",))
    cli.run("nnUNetv2_train", "713", "2d", "0", "-tr", "MASPriorTrainer_debug", "-device", "cpu")
    fold = cli.results / "Dataset713_PhantomMRTarget_MASPrior" / "MASPriorTrainer_debug__nnUNetPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "atlas prior channel" in log  # the trainer's wording of its channel report is changing (issue 18)
    assert "The split file contains 5 splits" in log  # mas's split, which nnU-Net's planner copied
    assert json.loads((cli.preprocessed / mas_folder.name / "splits_final.json").read_text(encoding="utf-8")) == splits
    images = cli.raw / "Dataset713_PhantomMRTarget_MASPrior" / "imagesTs"
    # the image and the liver prior; no tumour channel (the atlases' tumours say nothing about the target's)
    assert sorted(p.name for p in images.iterdir()) == [f"target_005_000{c}.nii.gz" for c in range(2)]
    cli.run("nnUNetv2_predict", "-i", str(images), "-o", str(cli.results / "pred"), "-d", "713", "-c", "2d",
            "-tr", "MASPriorTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0")
    prediction = sitk.ReadImage(str(cli.results / "pred" / "target_005.nii.gz"))
    assert prediction.GetSize() == sitk.ReadImage(str(images / "target_005_0000.nii.gz")).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}

    # new cases, image channel only, in nnU-Net naming: the test case under another name, and a phantom nobody saw
    new_cases = cli.raw.parent / "new_cases"
    new_cases.mkdir()
    shutil.copyfile(cli.raw / "Dataset712_PhantomMRTarget" / "imagesTs" / "target_005_0000.nii.gz",
                    new_cases / "unseen_0000.nii.gz")
    _, fresh = write_cross_modality_datasets(cli.raw.parent / "fresh", atlas_id=791, target_id=792, num_atlases=1,
                                             num_target_training=1, shape_zyx=(8, 32, 32),
                                             spacing_zyx_mm=(4.0, 3.0, 3.0), seed=9)
    shutil.copyfile(fresh / "imagesTr" / "target_000_0000.nii.gz", new_cases / "fresh_0000.nii.gz")
    out = cli.results / "pred_new"
    predict = ["predict", "-i", str(new_cases), "-o", str(out), "-d", "713", "-c", "2d", "-tr",
               "MASPriorTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta", "--disable_progress_bar"]
    capsys.readouterr()
    assert nnunet_mm(predict) == 0
    assert "atlas priors: 2 atlas" in capsys.readouterr().out
    for case in ("unseen", "fresh"):
        segmentation = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert segmentation.GetSize() == sitk.ReadImage(str(new_cases / f"{case}_0000.nii.gz")).GetSize()
        assert (out / "atlas_priors" / "qa" / f"{case}.png").is_file()
    # the model folder's dataset.json (nnU-Net's copy) carried the recipe: the same prior as 'mas' wrote
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "atlas_priors" / "unseen_0001.nii.gz"))),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(images / "target_005_0001.nii.gz"))),
                               atol=1e-5)
    report = json.loads((out / "missing_channels.json").read_text(encoding="utf-8"))
    assert {case: r["derived"] for case, r in report.items()} == {"fresh": "atlas", "unseen": "atlas"}
    assert all(r["filled"] == [] for r in report.values())
    assert nnunet_mm(predict) == 0  # again: the priors are reused, nothing registered
    assert "atlas priors: 2 cached" in capsys.readouterr().out
    assert nnunet_mm([*predict, "--priors", "zeros", "-o", str(cli.results / "pred_zeros")]) == 0
    report = json.loads((cli.results / "pred_zeros" / "missing_channels.json").read_text(encoding="utf-8"))
    assert report["fresh"]["derived"] == "zeros" and report["fresh"]["filled"] == [1]
    assert not (cli.results / "pred_zeros" / "atlas_priors").exists()
    # the atlases moved: refused, naming the file and --atlas; found again with --atlas
    moved_atlases = cli.raw.parent / "moved_atlases"
    (cli.raw / "Dataset711_PhantomCTAtlas").rename(moved_atlases)
    moved_run = [*predict, "-o", str(cli.results / "pred_moved")]
    assert nnunet_mm(moved_run) == 1
    err = capsys.readouterr().err
    assert "nnunet_mm predict: error: " in err and "atlas_000_0000.nii.gz: atlas image of 'atlas_000' not found" in err
    assert "pass its new folder with --atlas" in err
    assert nnunet_mm([*moved_run, "--atlas", str(moved_atlases)]) == 0
