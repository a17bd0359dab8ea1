"""Weak supervision from image-level labels (CLTN, paper 003; experiment of issue 20).

Data (``--data``; true masks are used only to score and by the true-mask arms):

* ``skin``: ISIC-like synthetic RGB skin images (:func:`nnunet_mm.weak.synthetic.write_skin_lesion_dataset`; dark
  irregular lesions on diseased images, none on normal ones), ``--num-diseased`` + ``--num-normal`` training images
  from generator seed ``--data-seed``, a held-out test set of ``--num-test`` images (half diseased, half normal) from
  generator seed ``--test-seed``.
* ``brats``: 2D axial slices of the real BraTS 2015 sample ``--brats-root`` (``{train,validation,test}/
  brats_2013_pat000N_1/``, FLAIR and T1c already z-scored inside the brain, 155 x 240 x 240). Training patients = the
  train and validation folders (4), test patients = the test folder (2): no patient on both sides. Lesion = whole
  tumour (``OTMultiClass > 0``). A slice is *diseased* with >= 50 tumour voxels at full resolution, *normal* with none
  and a brain mask covering > 5 % of the slice; slices with 1-49 tumour voxels are skipped. Evenly subsampled to
  ``--brats-train-per-patient`` diseased + as many normal slices per training patient and ``--brats-test-per-patient``
  + as many per test patient, resampled to 64 x 64 (images linear, labels nearest) and written as one-slice NIfTI
  cases (channels FLAIR, T1c; ``channel_acquisition: co_registered``, image labels in the ``'nnunet_mm'`` block).
  Skipped with a message when the folder is missing.
* ``phantom``: 3D liver phantoms (axial slices, lesion label 2), stage A only.

Held-out images are split by image label into ``imagesTs_diseased``/``labelsTs_diseased`` and ``imagesTs_normal``/
``labelsTs_normal`` of the true-mask raw dataset.

Stage A, per seed (``--seeds``): the label-transfer GAN trained on the image-level labels only (``--preset``: ``cpu``
64 px, 8-channel networks, 600 iterations; ``gpu`` the paper's 256 px, ch 54 / 64, 4 residual blocks, 7000
iterations), its pseudo masks exported as a raw dataset (``pseudo_masks.png``) and their Dice against the true masks
of the diseased training images (evaluation only). ``--segmenter-epochs 0`` stops here.

Stage B, per seed, four arms, nnU-Net 2d, fold ``all``, the same plans (planned once per dataset on the true-mask
dataset; the pseudo-mask datasets hold the same images and are preprocessed with a copy of those plans) and the same
schedule (``--segmenter-epochs`` x ``--segmenter-iterations``):

* ``true_nnunet``: true masks, ``nnUNetTrainer`` (the baseline);
* ``true_weak``: true masks, ``WeakLabelTrainer`` with its refinement off (isolates its mean teacher, consistency
  loss and intensity-perturbed teacher view);
* ``pseudo_nnunet``: the seed's pseudo masks, ``nnUNetTrainer``;
* ``pseudo_weak``: the seed's pseudo masks, ``WeakLabelTrainer`` with its refinement on (default: every 20 % of the
  epochs); the training log's refinement lines (cases relabelled, share of voxels whose served label changed
  against the pseudo masks, share set to ignore) are recorded in the run's ``run.json``.

Measured: nnU-Net's predictor (mirroring on) on the held-out images; ``nnunet_mm compare`` (label lesion, baseline
``true_nnunet``) on the diseased images: Dice per case averaged over seeds, the paired difference to the baseline
with a BCa bootstrap interval over cases, lesion recall and false-positive lesions per case; the issue's goal, the
ratio of ``pseudo_weak``'s to ``true_nnunet``'s mean diseased Dice (>= 70 %), with a paired BCa bootstrap interval
over cases (per-case Dice averaged over seeds); on the normal images per arm the false-positive rate (share with any
predicted lesion voxel) and the mean false-positive volume (:func:`nnunet_mm.weak.evaluation.score_by_image_label`),
mean ± std over seeds; training wall time per run.

Schedule, CPU preset ``--segmenter-epochs 10 --segmenter-iterations 25`` (250 steps; sized so that an arm trains in
about 2-3 min on one shared core, and the whole experiment, 2 datasets x 3 seeds x 4 arms, fits in about an hour).
Calibration: the first smoke run only (see ``--smoke``) was used to check timing; no arm's Dice was looked at to
choose the schedule.

Commands::

    python bench/bench_weak.py --workdir /tmp/weak_exp --data skin brats --seeds 0 1 2          # CPU preset
    python bench/bench_weak.py --workdir /tmp/weak_smoke --data skin brats --seeds 0 --smoke     # runs everything
    python bench/bench_weak.py --workdir /data/weak --data skin brats --preset gpu -device cuda \\
        --segmenter-epochs 100 --segmenter-iterations 250                                      # GPU scale
    python bench/bench_weak.py --workdir /tmp/weak_a --data skin phantom --segmenter-epochs 0     # stage A only

The work folder is reused: a seed's GAN and pseudo masks, the plans and every run whose ``run.json`` exists are not
redone, so a stopped experiment resumes; ``--report-only`` trains nothing and reports the runs that exist.

Output: ``WORKDIR/bench_weak.{json,md}`` (one table per dataset), ``WORKDIR/<data>/compare/compare.{json,md,png}``,
``WORKDIR/<data>/seed<k>/gan/`` (GAN, ``cltn_losses.png``), the pseudo-mask datasets with ``pseudo_masks.png`` under
``WORKDIR/nnUNet_raw`` (in ``raw/``), and per run ``WORKDIR/<data>/runs/<arm>/seed<k>/{run.json,model,
predictions_diseased,predictions_normal}``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import benchlib

# defaults per device class; the GPU one is the paper's scale (256 px, 64 x 64 attention cells)
PRESETS = {
    "cpu": {"image_size": 64, "size": 64, "iterations": 600, "base_channels": 8, "discriminator_channels": 8,
            "res_blocks": 2, "segmenter_epochs": 10, "segmenter_iterations": 25},
    "gpu": {"image_size": 256, "size": 256, "iterations": 7000, "base_channels": 54, "discriminator_channels": 64,
            "res_blocks": 4, "segmenter_epochs": 100, "segmenter_iterations": 250},
}
SMOKE = {"iterations": 20, "num_diseased": 6, "num_normal": 6, "num_test": 6, "brats_train_per_patient": 3,
         "brats_test_per_patient": 2, "segmenter_epochs": 5, "segmenter_iterations": 2}
#: raw dataset id of the true-mask dataset per data kind; seed k's pseudo masks get id + 1 + k
DATASET_IDS = {"skin": 930, "brats": 950, "phantom": 970}
MAX_SEED = 8
CONFIGURATION = "2d"
LESION = 1
BASELINE = "true_nnunet"
#: arm -> (masks, trainer, refinement on)
ARMS = {"true_nnunet": ("true", "nnUNetTrainer", False), "true_weak": ("true", "WeakLabelTrainer", False),
        "pseudo_nnunet": ("pseudo", "nnUNetTrainer", False), "pseudo_weak": ("pseudo", "WeakLabelTrainer", True)}
GOAL_RATIO = 0.7
BRATS_MIN_TUMOUR_VOXELS = 50
BRATS_MIN_BRAIN_FRACTION = 0.05
BRATS_SIDE = 64
#: z spacing of the one-slice cases: nnU-Net's 2D convention (its NaturalImage2DIO uses 999); with the true 1 mm,
#: below the 3.75 mm in-plane spacing, nnU-Net's planner would transpose z into the plane and slice 1 x 64 patches
BRATS_SLICE_SPACING = 999.0
BRATS_CHANNELS = {"Flair_subtrMeanDivStd": "FLAIR", "T1c_subtrMeanDivStd": "T1c"}
TEST_SPLITS = ("diseased", "normal")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bench_weak_work"), help="created if missing; reused")
    parser.add_argument("--data", nargs="+", choices=("skin", "brats", "phantom"), default=["skin", "brats"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="GAN and segmenter seeds [0 1 2]")
    parser.add_argument("--data-seed", type=int, default=0, help="generator seed of the skin training set [0]")
    parser.add_argument("--test-seed", type=int, default=1000, help="generator seed of the skin test set [1000]")
    parser.add_argument("--num-diseased", type=int, default=24, help="skin training images [24]")
    parser.add_argument("--num-normal", type=int, default=24, help="skin training images [24]")
    parser.add_argument("--num-test", type=int, default=40, help="skin held-out images, half diseased [40]")
    parser.add_argument("--brats-root", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared"
                        / "realdata" / "brats2015-deepmedic")
    parser.add_argument("--brats-train-per-patient", type=int, default=30,
                        help="at most this many diseased and as many normal slices per training patient [30]")
    parser.add_argument("--brats-test-per-patient", type=int, default=20,
                        help="at most this many diseased and as many normal slices per test patient [20]")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="defaults of the sizes, channels, iterations and schedule below [cpu]")
    parser.add_argument("--image-size", type=int, default=None, help="side of the synthetic skin images [preset]")
    parser.add_argument("--size", type=int, default=None, help="GAN image side (attention: a quarter) [preset]")
    parser.add_argument("--iterations", type=int, default=None, help="GAN iterations [preset]")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=None, help="[preset]")
    parser.add_argument("--discriminator-channels", type=int, default=None, help="[preset]")
    parser.add_argument("--res-blocks", type=int, default=None, help="[preset]")
    parser.add_argument("--discriminate-composites", action="store_true",
                        help="composites are fakes for the discriminators too (default: generator loss only)")
    parser.add_argument("--method", choices=("otsu", "watershed"), default="otsu")
    parser.add_argument("--polarity", choices=("auto", "attention", "inverted"), default="auto",
                        help="side of the attention mask taken as the lesion (weak-export --polarity) [auto]")
    parser.add_argument("-device", default=None, choices=("cuda", "cpu"))
    parser.add_argument("--segmenter-epochs", type=int, default=None, help="stage B epochs, 0: stage A only [preset]")
    parser.add_argument("--segmenter-iterations", type=int, default=None, help="stage B iterations/epoch [preset]")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("-np", type=int, default=1, help="processes for planning and preprocessing [1]")
    parser.add_argument("--smoke", action="store_true", help="tiny data, GAN and schedule: checks that it runs")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the runs that exist")
    return parser


def _dataset_id(folder: Path) -> int:
    """The id of a raw dataset folder ``DatasetXXX_Name``."""
    return int(folder.name[len("Dataset"):].split("_")[0])


def _raw() -> Path:
    return Path(os.environ["nnUNet_raw"])


def _true_dataset(kind: str) -> Path:
    names = {"skin": "BenchSkin", "brats": "BenchBraTS2D", "phantom": "BenchPhantom"}
    return _raw() / f"Dataset{DATASET_IDS[kind]:03d}_{names[kind]}"


def _pseudo_dataset(kind: str, seed: int) -> Path:
    source = _true_dataset(kind)
    return _raw() / f"Dataset{DATASET_IDS[kind] + 1 + seed:03d}_{source.name.split('_', 1)[1]}PseudoSeed{seed}"


# ----------------------------------------------------------------------------------------------------------------
# data


def prepare_data(kind: str, args: argparse.Namespace) -> Path | None:
    """The true-mask raw dataset of ``kind`` (with the split test folders), written once; None when unavailable."""
    folder = _true_dataset(kind)
    marker = folder / "bench_weak_data.json"
    settings = {key: getattr(args, key) for key in ("data_seed", "test_seed", "num_diseased", "num_normal",
                                                    "num_test", "image_size", "brats_train_per_patient",
                                                    "brats_test_per_patient")}
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == settings:
        return folder
    if kind == "skin":
        _write_skin(folder, args)
    elif kind == "brats":
        if not args.brats_root.is_dir():
            print(f"[brats] skipped: the BraTS sample {args.brats_root} is missing (--brats-root)", flush=True)
            return None
        write_brats_slices(args.brats_root, folder, train_per_patient=args.brats_train_per_patient,
                           test_per_patient=args.brats_test_per_patient)
    else:
        from nnunet_mm.phantom import write_nnunet_raw
        write_nnunet_raw(_raw(), dataset_id=DATASET_IDS[kind], name="BenchPhantom",
                         num_training=max(2, args.num_diseased // 4), seed=args.data_seed, shape_zyx=(24, 64, 64),
                         phases=("pv",), overwrite=True)
    marker.write_text(json.dumps(settings), encoding="utf-8")
    return folder


def _write_skin(folder: Path, args: argparse.Namespace) -> None:
    """Training set from ``--data-seed``; test images of ``--test-seed`` split into the ``*Ts_<label>`` folders."""
    from nnunet_mm.weak.synthetic import write_skin_lesion_dataset

    write_skin_lesion_dataset(_raw(), dataset_id=_dataset_id(folder), name=folder.name.split("_", 1)[1],
                              num_diseased=args.num_diseased, num_normal=args.num_normal, size=args.image_size,
                              seed=args.data_seed, overwrite=True)
    scratch = folder.parent.parent / "skin_test_source"
    shutil.rmtree(scratch, ignore_errors=True)
    test = write_skin_lesion_dataset(scratch, dataset_id=_dataset_id(folder), name="Test",
                                     num_diseased=args.num_test // 2, num_normal=args.num_test - args.num_test // 2,
                                     size=args.image_size, seed=args.test_seed)
    labels = json.loads((test / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["image_labels"]
    for case, label in labels.items():
        for sub, suffix in (("images", "_0000.png"), ("labels", ".png")):
            target = folder / f"{sub}Ts_{label}"
            target.mkdir(exist_ok=True)
            shutil.copy2(test / f"{sub}Tr" / f"{case}{suffix}", target / f"test_{case}{suffix}")
    shutil.rmtree(scratch)


def _even(indices: list[int], count: int) -> list[int]:
    """At most ``count`` of ``indices``, evenly spread."""
    import numpy as np

    if len(indices) <= count:
        return list(indices)
    return [indices[i] for i in np.linspace(0, len(indices) - 1, count).round().astype(int)]


def brats_slice_selection(tumour_voxels, brain_fraction, per_label: int) -> dict[str, list[int]]:
    """Axial slices of one patient by the rules of the module docstring, evenly subsampled to ``per_label`` each."""
    diseased = [z for z, n in enumerate(tumour_voxels) if n >= BRATS_MIN_TUMOUR_VOXELS]
    normal = [z for z, (n, b) in enumerate(zip(tumour_voxels, brain_fraction))
              if n == 0 and b > BRATS_MIN_BRAIN_FRACTION]
    return {"diseased": _even(diseased, per_label), "normal": _even(normal, per_label)}


def write_brats_slices(root: Path, folder: Path, *, train_per_patient: int, test_per_patient: int) -> Path:
    """The BraTS 2D raw dataset (module docstring): training slices in imagesTr/labelsTr, test slices in
    ``imagesTs_<label>``/``labelsTs_<label>``."""
    import numpy as np
    import SimpleITK as sitk
    from skimage.transform import resize

    from nnunet_mm.settings import BLOCK_KEY
    from nnunet_mm.weak.image_labels import IMAGE_LABELS_KEY

    shutil.rmtree(folder, ignore_errors=True)
    patients = {"train": sorted(p for split in ("train", "validation") for p in (root / split).glob("brats_*")),
                "test": sorted((root / "test").glob("brats_*"))}
    image_labels, selected = {}, {}
    for role, folders in patients.items():
        for patient in folders:
            arrays = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(patient / f"{name}.nii.gz")))
                      for name in (*BRATS_CHANNELS, "OTMultiClass", "brainmask")}
            spacing = sitk.ReadImage(str(patient / "brainmask.nii.gz")).GetSpacing()
            tumour = arrays["OTMultiClass"] > 0
            chosen = brats_slice_selection(tumour.sum((1, 2)), (arrays["brainmask"] > 0).mean((1, 2)),
                                           train_per_patient if role == "train" else test_per_patient)
            selected[patient.name] = {label: len(z) for label, z in chosen.items()}
            short = patient.name.replace("brats_2013_", "").replace("_1", "")
            for label, slices in chosen.items():
                images_dir = folder / ("imagesTr" if role == "train" else f"imagesTs_{label}")
                labels_dir = folder / ("labelsTr" if role == "train" else f"labelsTs_{label}")
                images_dir.mkdir(parents=True, exist_ok=True)
                labels_dir.mkdir(parents=True, exist_ok=True)
                for z in slices:
                    case = f"{short}_z{z:03d}"
                    geometry = (spacing[0] * tumour.shape[2] / BRATS_SIDE, spacing[1] * tumour.shape[1] / BRATS_SIDE,
                                BRATS_SLICE_SPACING)
                    for channel, name in enumerate(BRATS_CHANNELS):
                        image = resize(arrays[name][z].astype(np.float32), (BRATS_SIDE, BRATS_SIDE), order=1,
                                       anti_aliasing=True, preserve_range=True).astype(np.float32)
                        _write_slice(image, geometry, images_dir / f"{case}_{channel:04d}.nii.gz")
                    mask = resize(tumour[z].astype(np.uint8), (BRATS_SIDE, BRATS_SIDE), order=0, anti_aliasing=False,
                                  preserve_range=True).astype(np.uint8)
                    _write_slice(mask, geometry, labels_dir / f"{case}.nii.gz")
                    if role == "train":
                        image_labels[case] = label
    dataset_json = {"channel_names": {str(i): n for i, n in enumerate(BRATS_CHANNELS.values())},
                    "labels": {"background": 0, "lesion": LESION}, "numTraining": len(image_labels),
                    "file_ending": ".nii.gz", "name": folder.name,
                    BLOCK_KEY: {"channel_acquisition": "co_registered", IMAGE_LABELS_KEY: image_labels,
                                "notes": f"2D axial slices of the BraTS 2015 sample {root}, {BRATS_SIDE} x "
                                         f"{BRATS_SIDE}; lesion = whole tumour; slices per patient {selected}"}}
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1) + "\n", encoding="utf-8")
    print(f"[brats] slices per patient (diseased/normal): {selected}", flush=True)
    return folder


def _write_slice(array, spacing: tuple[float, float, float], file: Path) -> None:
    """A (H, W) array as a one-slice NIfTI volume."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array[None])
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(file), useCompression=True)


# ----------------------------------------------------------------------------------------------------------------
# stage A


def stage_a(kind: str, source: Path, seed: int, args: argparse.Namespace, device) -> dict:
    """Seed ``seed``'s GAN and pseudo-mask dataset (done once: ``stage_a.json`` in the GAN folder)."""
    from nnunet_mm.weak.cltn_gan import CLTNConfig, train_label_transfer_gan
    from nnunet_mm.weak.cltn_losses import loss_weights_preset
    from nnunet_mm.weak.pseudo_masks import export_pseudo_mask_dataset
    from nnunet_mm.weak.weak_images import load_weak_images

    model_dir = args.workdir / kind / f"seed{seed}" / "gan"
    record_file = model_dir / "stage_a.json"
    target = _pseudo_dataset(kind, seed)
    if record_file.is_file() and (target / "dataset.json").is_file():
        return json.loads(record_file.read_text(encoding="utf-8"))
    lesion_labels = (2,) if kind == "phantom" else None
    images = load_weak_images(source, size=args.size, lesion_labels=lesion_labels)
    config = CLTNConfig(in_channels=images[0].image.shape[0], image_size=args.size, base_channels=args.base_channels,
                        num_res_blocks=args.res_blocks, discriminator_channels=args.discriminator_channels,
                        loss_weights=loss_weights_preset("isic" if kind == "skin" else "brats"),
                        discriminate_composites=args.discriminate_composites)
    start = time.perf_counter()
    train_label_transfer_gan(images, model_dir, iterations=args.iterations, config=config,
                             batch_size=args.batch_size, overwrite=True, device=device, seed=seed)
    gan_seconds = time.perf_counter() - start
    export_pseudo_mask_dataset(source, model_dir, target, method=args.method, polarity=args.polarity,
                               lesion_labels=lesion_labels, overwrite=True, device=device, progress=False)
    report = json.loads((target / "pseudo_mask_dice.json").read_text(encoding="utf-8"))
    polarity = json.loads((target / "attention_polarity.json").read_text(encoding="utf-8"))
    record = {"seed": seed, "pseudo_dataset": target.name,
              "images_diseased": sum(i.image_label == "diseased" for i in images),
              "images_normal": sum(i.image_label == "normal" for i in images),
              "image_shape": list(images[0].image.shape),
              "gan_iterations": args.iterations, "gan_seconds": round(gan_seconds, 1),
              "seconds_per_iteration": round(gan_seconds / max(args.iterations, 1), 3),
              "pseudo_mask_dice_mean": report["mean_dice"], "method": args.method, "polarity": polarity,
              "overview_png": str(target / "pseudo_masks.png"), "loss_png": str(model_dir / "cltn_losses.png")}
    record_file.write_text(json.dumps(record, indent=1), encoding="utf-8")
    mean = "undefined (every mask empty)" if report["mean_dice"] is None else f"{report['mean_dice']:.3f}"
    print(f"[{kind}] seed {seed}: pseudo-mask Dice {mean} over {len(report['per_case'])} diseased training image(s); "
          f"GAN {gan_seconds:.0f} s for {args.iterations} iterations; attention "
          f"{'inverted' if polarity['inverted'] else 'kept'} ({polarity['rule']}, median margin "
          f"{polarity['median_margin']})", flush=True)
    return record


def outlier_baseline(kind: str, source: Path, args: argparse.Namespace) -> dict:
    """Diagnostic without a GAN: how well "unlike healthy tissue" alone outlines the lesions.

    The pseudo mask of a diseased training image is Otsu's binarisation of each pixel's Mahalanobis distance from the
    normal training images' foreground pixels (the model :mod:`nnunet_mm.weak.polarity` uses to orient the attention).
    Scored against the true masks of the diseased training images; nothing is trained on these masks.
    """
    import numpy as np
    import SimpleITK as sitk

    from nnunet_mm.evaluation.metrics import dice
    from nnunet_mm.weak.polarity import fit_healthy_appearance
    from nnunet_mm.weak.pseudo_masks import pseudo_mask_of
    from nnunet_mm.weak.weak_images import load_weak_images

    lesion_labels = (2,) if kind == "phantom" else None
    images = load_weak_images(source, size=args.size, lesion_labels=lesion_labels)
    healthy = fit_healthy_appearance(images)
    file_ending = json.loads((source / "dataset.json").read_text(encoding="utf-8"))["file_ending"]
    scores = []
    for image in images:
        if image.image_label != "diseased":
            continue
        mask = pseudo_mask_of(image, healthy.distance(image.image), "otsu").astype(bool)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / f"{image.case_id}{file_ending}")))
        truth = truth if image.slice_index is None or truth.ndim == 2 else truth[image.slice_index]
        truth = truth.reshape(mask.shape)
        scores.append(dice(truth > 0 if lesion_labels is None else np.isin(truth, lesion_labels), mask))
    defined = [score for score in scores if not math.isnan(score)]
    return {"pseudo_mask_dice_mean": round(float(np.mean(defined)), 3) if defined else None,
            "images": len(scores), "healthy_pixels_from": healthy.source}


# ----------------------------------------------------------------------------------------------------------------
# stage B


def plan_once(kind: str, seeds: list[int], num_processes: int) -> None:
    """nnU-Net 2d plans of the true-mask dataset; every pseudo-mask dataset preprocessed with a copy of them."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    source = _true_dataset(kind)
    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    if not (preprocessed / source.name / "nnUNetPlans_2d").is_dir():
        benchlib.plan_and_preprocess(_dataset_id(source), CONFIGURATION, num_processes=num_processes)
    for seed in seeds:
        target = _pseudo_dataset(kind, seed)
        marker = preprocessed / target.name / "bench_weak_preprocessed"
        if marker.is_file():
            continue
        shutil.rmtree(preprocessed / target.name, ignore_errors=True)
        benchlib.copy_plans(source.name, target.name, keep_configuration=lambda name: name == CONFIGURATION)
        preprocess_dataset(_dataset_id(target), configurations=(CONFIGURATION,), num_processes=(num_processes,))
        marker.write_text("done\n", encoding="utf-8")


REFINED_LINE = re.compile(r"refined (\d+) case\(s\) on rank \d+: ([\d.]+)% of voxels changed, ([\d.]+)% ignored")


def refinement_from_log(log_file: Path) -> list[dict]:
    """The refinement lines of a WeakLabelTrainer log: per refinement, cases relabelled and the shares of voxels
    changed (against the exported pseudo masks) and set to ignore."""
    found = []
    for line in Path(log_file).read_text(encoding="utf-8").splitlines():
        match = REFINED_LINE.search(line)
        if match:
            found.append({"cases": int(match[1]), "voxels_changed_percent": float(match[2]),
                          "voxels_ignored_percent": float(match[3])})
    return found


def run_arm(kind: str, arm: str, seed: int, args: argparse.Namespace, device) -> dict:
    """Train one arm with one seed (skipped when its run.json exists), predict the held-out images, score the normal
    ones."""
    from nnunet_mm.weak.evaluation import score_prediction_folder

    folder = args.workdir / kind / "runs" / arm / f"seed{seed}"
    if (folder / "run.json").is_file():
        return json.loads((folder / "run.json").read_text(encoding="utf-8"))
    shutil.rmtree(folder, ignore_errors=True)
    masks, trainer_name, refine = ARMS[arm]
    dataset = _true_dataset(kind) if masks == "true" else _pseudo_dataset(kind, seed)
    attributes = {"refinement_interval": args.segmenter_epochs} if trainer_name == "WeakLabelTrainer" and not refine \
        else {}  # an interval of all epochs: no refinement
    trainer, timing, _ = benchlib.train(trainer_name, dataset.name, device_name=device.type,
                                        configuration=CONFIGURATION, epochs=args.segmenter_epochs,
                                        iterations=args.segmenter_iterations, attributes=attributes, seed=seed,
                                        output_folder_base=folder / "model")
    record = {"data": kind, "arm": arm, "seed": seed, "dataset": dataset.name, "trainer": trainer_name,
              "refinement_on": refine, **timing}
    if trainer_name == "WeakLabelTrainer":
        record["refinements"] = refinement_from_log(Path(trainer.log_file))
        record["refinement_epochs_planned"] = trainer.refinement_epochs()
        refined_folder = Path(trainer.output_folder) / "refined_labels"
        record["refined_label_files"] = len(list(refined_folder.glob("*"))) if refined_folder.is_dir() else 0
        if refine and not record["refinements"]:
            print(f"[{kind}] WARNING {arm} seed {seed}: refinement did not fire (log {trainer.log_file})", flush=True)
    del trainer
    truth = _true_dataset(kind)
    file_ending = json.loads((truth / "dataset.json").read_text(encoding="utf-8"))["file_ending"]
    start = time.perf_counter()
    for split in TEST_SPLITS:
        benchlib.predict_folder(folder / "model", truth / f"imagesTs_{split}", folder / f"predictions_{split}",
                                device_name=device.type)
    record["predict_seconds"] = round(time.perf_counter() - start, 1)
    for split in TEST_SPLITS:
        cases = [f.name[:-len(file_ending)] for f in sorted((truth / f"labelsTs_{split}").glob(f"*{file_ending}"))]
        scores = score_prediction_folder(truth / f"labelsTs_{split}", folder / f"predictions_{split}",
                                         {case: split for case in cases}, file_ending=file_ending,
                                         lesion_labels=(LESION,))
        record[f"scores_{split}"] = scores.to_json()
    (folder / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(f"[{kind}] {arm} seed {seed}: train {timing['train_seconds']:.0f} s, diseased Dice "
          f"{_fmt(record['scores_diseased']['diseased_dice'])}, normal FP rate "
          f"{_fmt(record['scores_normal']['false_positive_rate'])}" +
          (f", refinements {record['refinements']}" if "refinements" in record else ""), flush=True)
    return record


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def compare_runs(kind: str, arms: list[str], seeds: list[int], args: argparse.Namespace):
    """``nnunet_mm compare`` of the arms on the diseased held-out images (baseline true_nnunet, label lesion) over
    the runs that exist, into ``WORKDIR/<data>/compare``; the Comparison, or None."""
    from nnunet_mm.evaluation.compare import compare_arms
    from nnunet_mm.evaluation.report import write_report
    from nnunet_mm.evaluation.runs import collect_arm

    truth = _true_dataset(kind)
    runs = {arm: [args.workdir / kind / "runs" / arm / f"seed{s}" / "predictions_diseased" for s in seeds
                  if (args.workdir / kind / "runs" / arm / f"seed{s}" / "run.json").is_file()] for arm in arms}
    runs = {arm: folders for arm, folders in runs.items() if folders}
    if BASELINE not in runs or len(runs) < 2:
        return None
    collected = [collect_arm(arm, folders, dataset_json=truth / "dataset.json") for arm, folders in runs.items()]
    comparison = compare_arms(collected, truth / "labelsTs_diseased", baseline=BASELINE, labels=[LESION],
                              dataset_json=truth / "dataset.json", progress=False)
    write_report(comparison, args.workdir / kind / "compare", overwrite=True)
    return comparison


def dice_ratio(arm_dice, baseline_dice, *, n_resamples: int = 10000, seed: int = 0) -> dict:
    """``mean(arm) / mean(baseline)`` over the cases where both are defined, with a paired BCa bootstrap 95 %
    interval over cases (percentile when BCa is undefined)."""
    import numpy as np
    from scipy.stats import bootstrap

    a, b = np.asarray(arm_dice, float), np.asarray(baseline_dice, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size == 0 or b.mean() == 0:
        return {"ratio": None, "ci_low": None, "ci_high": None, "num_cases": int(a.size), "ci_method": None}
    ratio = float(a.mean() / b.mean())
    low = high = None
    method = None
    if a.size >= 3:
        for method in ("BCa", "percentile"):
            with np.errstate(all="ignore"):
                result = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) / y.mean(axis), paired=True,
                                   vectorized=True, n_resamples=n_resamples, confidence_level=0.95, method=method,
                                   random_state=np.random.default_rng(seed))
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
            if np.isfinite(low) and np.isfinite(high):
                break
    return {"ratio": round(ratio, 4), "ci_low": None if low is None else round(low, 4),
            "ci_high": None if high is None else round(high, 4), "num_cases": int(a.size), "ci_method": method}


def summarize(kind: str, comparison, records: list[dict], stage_a_records: list[dict]) -> dict:
    """Per arm: diseased Dice, Δ and CI (from the comparison), ratio to the baseline, lesion detection, normal-image
    false positives (mean ± std over seeds), train minutes; the goal's verdict."""
    import numpy as np

    from nnunet_mm.evaluation.report import comparison_json

    table = {}
    compared = comparison_json(comparison) if comparison is not None else None
    for arm in ARMS:
        runs = [r for r in records if r["arm"] == arm]
        if not runs:
            continue
        row = {"runs": len(runs), "seeds": [r["seed"] for r in runs]}
        if compared is not None and arm in compared["summary"]["lesion"]:
            summary = compared["summary"]["lesion"][arm]
            row.update({key: summary.get(key) for key in ("dice_mean", "dice_std_over_runs", "lesion_recall",
                                                          "false_positives_per_case", "difference_to_baseline")})
            row["ratio_to_baseline"] = dice_ratio(comparison.summaries[LESION][arm].case_dice,
                                                  comparison.summaries[LESION][BASELINE].case_dice)
        for key in ("false_positive_rate", "mean_false_positive_voxels"):
            values = [r["scores_normal"][key] for r in runs if r["scores_normal"][key] is not None]
            row[f"normal_{key}"] = float(np.mean(values)) if values else None
            row[f"normal_{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        row["train_minutes_mean"] = float(np.mean([r["train_seconds"] for r in runs])) / 60
        row["train_seconds_per_run"] = [r["train_seconds"] for r in runs]
        row["predict_seconds_per_run"] = [r["predict_seconds"] for r in runs]
        if any("refinements" in r for r in runs):
            row["refinements_per_run"] = {r["seed"]: r.get("refinements") for r in runs}
        table[arm] = row
    goal = table.get("pseudo_weak", {}).get("ratio_to_baseline")
    verdict = None
    if goal and goal["ratio"] is not None:
        verdict = ("met (the interval lies above 70 %)" if goal["ci_low"] is not None and goal["ci_low"] >= GOAL_RATIO
                   else "not met (the interval lies below 70 %)" if goal["ci_high"] is not None
                   and goal["ci_high"] < GOAL_RATIO
                   else f"undecided (the interval contains 70 %; point estimate "
                        f"{'above' if goal['ratio'] >= GOAL_RATIO else 'below'})")
    return {"arms": table, "goal_ratio_pseudo_weak": goal, "goal_verdict": verdict,
            "pseudo_mask_dice_per_seed": {r["seed"]: r["pseudo_mask_dice_mean"] for r in stage_a_records},
            "compare_report": None if compared is None else compared}


def _pm(mean, std, digits: int = 2) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def overview(kind: str, summary: dict, stage_a_records: list[dict]) -> list[str]:
    lines = [f"## {kind}", "", "| arm | runs | diseased Dice (Δ vs true_nnunet [95 % CI]) | ratio to true_nnunet "
                               "[95 % CI] | lesion recall · FP/case | normal: FP rate · FP voxels | train min |",
             "|---|---|---|---|---|---|---|"]
    for arm, row in summary["arms"].items():
        dice = "–" if row.get("dice_mean") is None else f"{row['dice_mean']:.3f}"
        difference = row.get("difference_to_baseline")
        if difference and difference.get("mean") is not None:
            dice += f" ({100 * difference['mean']:+.1f} pt"
            if difference.get("ci_low") is not None:
                dice += f" [{100 * difference['ci_low']:+.1f}, {100 * difference['ci_high']:+.1f}]"
            dice += ")"
        ratio = row.get("ratio_to_baseline") or {}
        ratio_text = "–" if ratio.get("ratio") is None else f"{100 * ratio['ratio']:.0f} %" + (
            "" if ratio.get("ci_low") is None else f" [{100 * ratio['ci_low']:.0f}, {100 * ratio['ci_high']:.0f}]")
        detection = ("–" if row.get("lesion_recall") is None else
                     f"{row['lesion_recall']:.2f} · {row['false_positives_per_case']:.2f}")
        normal = (f"{_pm(row['normal_false_positive_rate'], row['normal_false_positive_rate_std'])} · "
                  f"{_pm(row['normal_mean_false_positive_voxels'], row['normal_mean_false_positive_voxels_std'], 1)}")
        lines.append(f"| {arm} | {row['runs']} | {dice} | {ratio_text} | {detection} | {normal} | "
                     f"{row['train_minutes_mean']:.1f} |")
    lines += ["", f"Goal (pseudo_weak ≥ 70 % of true_nnunet's diseased Dice): {summary['goal_verdict'] or 'no result'}",
              "", "Stage A pseudo-mask Dice (diseased training images) per seed: " + ", ".join(
                  f"seed {r['seed']} {_fmt(r['pseudo_mask_dice_mean'])} (GAN {r['gan_seconds']:.0f} s"
                  + (f", attention {'inverted' if r['polarity']['inverted'] else 'kept'}" if "polarity" in r else "")
                  + ")" for r in stage_a_records)]
    refinements = summary["arms"].get("pseudo_weak", {}).get("refinements_per_run")
    if refinements:
        lines += ["", "pseudo_weak refinements (cases · % voxels changed vs pseudo masks · % ignored): " + "; ".join(
            f"seed {seed}: " + (", ".join(f"{r['cases']} · {r['voxels_changed_percent']:.2f} · "
                                          f"{r['voxels_ignored_percent']:.2f}" for r in found) or "none fired")
            for seed, found in refinements.items())]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if any(s < 0 or s > MAX_SEED for s in args.seeds):
        raise SystemExit(f"seeds must lie in 0..{MAX_SEED} (each seed's pseudo masks get their own dataset id)")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(args.workdir)  # self-contained: never the user's nnU-Net folders
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = {"command": " ".join(sys.argv), "device": str(device), "torch_threads": torch.get_num_threads(),
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "datasets": {}}
    lines = [f"# Weak supervision from image-level labels ({'smoke' if args.smoke else args.preset} preset; "
             f"GAN {args.iterations} iterations; segmenters {args.segmenter_epochs} x {args.segmenter_iterations}; "
             f"seeds {args.seeds})", ""]
    for kind in args.data:
        source = prepare_data(kind, args)
        if source is None:
            results["datasets"][kind] = {"skipped": "data missing"}
            continue
        stage_a_records = [stage_a(kind, source, seed, args, device) for seed in args.seeds]
        entry = {"true_dataset": source.name, "stage_a": stage_a_records}
        entry["outlier_baseline"] = outlier_baseline(kind, source, args)
        print(f"[{kind}] no-GAN diagnostic (Otsu of the distance from healthy tissue): pseudo-mask Dice "
              f"{_fmt(entry['outlier_baseline']['pseudo_mask_dice_mean'])}", flush=True)
        if args.segmenter_epochs > 0 and kind != "phantom":
            plan_once(kind, args.seeds, args.np)
            for seed in [] if args.report_only else args.seeds:  # seed by seed: a stopped run has complete seeds
                for arm in args.arms:
                    print(f"[bench_weak] {kind} / {arm} / seed {seed}", flush=True)
                    run_arm(kind, arm, seed, args, device)
            records = [json.loads(f.read_text(encoding="utf-8")) for f in sorted((args.workdir / kind / "runs").glob("*/seed*/run.json"))
                       if json.loads(f.read_text(encoding="utf-8"))["seed"] in args.seeds]
            comparison = compare_runs(kind, list(ARMS), args.seeds, args)
            entry["runs"] = records
            entry["summary"] = summarize(kind, comparison, records, stage_a_records)
            lines += overview(kind, entry["summary"], stage_a_records) + [
                "", "Diagnostic, no GAN: pseudo-mask Dice of Otsu on the distance from healthy tissue "
                f"(diseased training images): {_fmt(entry['outlier_baseline']['pseudo_mask_dice_mean'])}", ""]
            if comparison is not None:
                lines += [(args.workdir / kind / "compare" / "compare.md").read_text(encoding="utf-8"), ""]
        else:
            lines += [f"## {kind}", "", "Stage A only: pseudo-mask Dice per seed " + ", ".join(
                f"seed {r['seed']} {_fmt(r['pseudo_mask_dice_mean'])}" for r in stage_a_records), ""]
        results["datasets"][kind] = entry
    (args.workdir / "bench_weak.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    (args.workdir / "bench_weak.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
