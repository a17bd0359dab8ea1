"""Benchmark of weak supervision (CLTN, paper 003).

Stage A: Dice of the GAN's pseudo masks against the true masks (never seen by the GAN), GAN time per iteration, and
the exported pseudo-mask dataset. Stage B (skin data; ``--segmenter-epochs 0`` skips it): nnU-Net 2d trained on the
pseudo masks (``WeakLabelTrainer``) and on the true masks (``nnUNetTrainer``), same plans and schedule, fold
``all``, both evaluated with nnU-Net's predictor and evaluation on held-out images (another seed) against their true
masks; the ratio of the two lesion Dice values is the issue's goal (>= 70 %). Half the held-out images are normal, so
each arm is also scored split by image label (:mod:`nnunet_mm.weak.evaluation`): Dice on the diseased images, and on
the normal ones the false-positive rate (share with any predicted lesion voxel) and the mean false-positive volume.

Presets (``--preset``; any option given explicitly wins): ``cpu`` runs the GAN at 64 px (16 × 16 attention cells)
with 8-channel networks and 600 iterations; ``gpu`` at the paper's 256 px (64 × 64 attention), ch 54 / 64, 4
residual blocks, 7000 iterations, on 256-px images.

Data: ISIC-like synthetic skin images (``--data skin``; RGB, dark irregular lesions, normal images without) and/or
3D liver phantoms (``--data phantom``; axial slices, tumour-free slices normal, lesion label 2). True masks are only
used for evaluation.

GPU goal (issue 8): 7000 GAN iterations at 256 px; final nnU-Net Dice on pseudo masks ≥ 70 % of the true-mask
model's. CPU smoke scale: ``python bench/bench_weak.py --preset cpu --iterations 200``.

Example (GPU)::

    python bench/bench_weak.py --workdir /data/bench_weak --data skin phantom --preset gpu -device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import benchlib


# defaults per device class; the GPU one is the paper's scale (256 px, 64 x 64 attention cells)
PRESETS = {
    "cpu": {"image_size": 64, "size": 64, "iterations": 600, "base_channels": 8, "discriminator_channels": 8,
            "res_blocks": 2},
    "gpu": {"image_size": 256, "size": 256, "iterations": 7000, "base_channels": 54, "discriminator_channels": 64,
            "res_blocks": 4},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bench_weak_work"), help="created if missing")
    parser.add_argument("--data", nargs="+", choices=("skin", "phantom"), default=["skin"])
    parser.add_argument("--num-diseased", type=int, default=24)
    parser.add_argument("--num-normal", type=int, default=24)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="defaults of the sizes, channels and iterations below [cpu]")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-device", default=None, choices=("cuda", "cpu"))
    parser.add_argument("--segmenter-epochs", type=int, default=50, help="stage B nnU-Net epochs, 0 skips [50]")
    parser.add_argument("--segmenter-iterations", type=int, default=100, help="stage B iterations per epoch [100]")
    parser.add_argument("--num-test", type=int, default=40, help="stage B held-out images (half diseased) [40]")
    parser.add_argument("-o", "--output", type=Path, default=None, help="results JSON [default: WORKDIR/results.json]")
    return parser


def _prepare_data(kind: str, raw: Path, args: argparse.Namespace) -> tuple[Path, tuple[int, ...] | None]:
    if kind == "skin":
        from nnunet_mm.weak.synthetic import write_skin_lesion_dataset
        folder = write_skin_lesion_dataset(raw, dataset_id=930, name="BenchSkin", num_diseased=args.num_diseased,
                                           num_normal=args.num_normal, size=args.image_size, seed=args.seed,
                                           overwrite=True)
        return folder, None
    from nnunet_mm.phantom import write_nnunet_raw
    folder = write_nnunet_raw(raw, dataset_id=940, name="BenchPhantom", num_training=max(2, args.num_diseased // 4),
                              seed=args.seed, shape_zyx=(24, 64, 64), phases=("pv",), overwrite=True)
    return folder, (2,)


def _dataset_id(folder: Path) -> int:
    """The id of a raw dataset folder ``DatasetXXX_Name``."""
    return int(folder.name[len("Dataset"):].split("_")[0])


def _bench_dataset(kind: str, args: argparse.Namespace, device) -> dict:
    from nnunet_mm.weak.cltn_gan import CLTNConfig, train_label_transfer_gan
    from nnunet_mm.weak.cltn_losses import loss_weights_preset
    from nnunet_mm.weak.pseudo_masks import export_pseudo_mask_dataset
    from nnunet_mm.weak.weak_images import load_weak_images

    raw = args.workdir / "nnUNet_raw"
    source, lesion_labels = _prepare_data(kind, raw, args)
    images = load_weak_images(source, size=args.size, lesion_labels=lesion_labels, progress=True)
    config = CLTNConfig(in_channels=images[0].image.shape[0], image_size=args.size, base_channels=args.base_channels,
                        num_res_blocks=args.res_blocks, discriminator_channels=args.discriminator_channels,
                        loss_weights=loss_weights_preset("isic" if kind == "skin" else "brats"),
                        discriminate_composites=args.discriminate_composites)
    model_dir = args.workdir / f"gan_{kind}"
    start = time.perf_counter()
    train_label_transfer_gan(images, model_dir, iterations=args.iterations, config=config,
                             batch_size=args.batch_size, overwrite=True, device=device, seed=args.seed)
    gan_seconds = time.perf_counter() - start
    target = raw / f"Dataset{_dataset_id(source) + 1:03d}_{source.name.split('_', 1)[1]}PseudoMasks"
    export_pseudo_mask_dataset(source, model_dir, target, method=args.method, lesion_labels=lesion_labels,
                               overwrite=True, device=device)
    report = json.loads((target / "pseudo_mask_dice.json").read_text())
    result = {"images_diseased": sum(i.image_label == "diseased" for i in images),
              "images_normal": sum(i.image_label == "normal" for i in images),
              "gan_iterations": args.iterations, "gan_seconds": round(gan_seconds, 1),
              "seconds_per_iteration": round(gan_seconds / max(args.iterations, 1), 3),
              "pseudo_mask_dice_mean": report["mean_dice"], "method": args.method,
              "overview_png": str(target / "pseudo_masks.png"), "loss_png": str(model_dir / "cltn_losses.png")}
    mean = "undefined (every mask empty)" if report["mean_dice"] is None else f"{report['mean_dice']:.3f}"
    print(f"[{kind}] pseudo-mask Dice {mean} over {len(report['per_case'])} diseased case(s); "
          f"GAN {gan_seconds:.0f} s for {args.iterations} iterations")
    if kind == "skin" and args.segmenter_epochs > 0:
        result["segmenters"] = _stage_b(source, target, args, device)
    return result


def _stage_b(source: Path, pseudo: Path, args: argparse.Namespace, device) -> dict:
    """nnU-Net on pseudo masks vs on true masks, evaluated on held-out skin images against their true masks: nnU-Net's
    mean lesion Dice (normal images included) and the scores split by image label."""
    from nnunet_mm.settings import read_settings
    from nnunet_mm.weak.evaluation import score_prediction_folder
    from nnunet_mm.weak.image_labels import read_image_labels
    from nnunet_mm.weak.synthetic import write_skin_lesion_dataset

    test = write_skin_lesion_dataset(source.parent, dataset_id=_dataset_id(pseudo) + 1, name="BenchSkinTest",
                                     num_diseased=args.num_test // 2, num_normal=args.num_test - args.num_test // 2,
                                     size=args.image_size, seed=args.seed + 1000, overwrite=True)
    arms = {"true masks (nnUNetTrainer)": (source, "nnUNetTrainer"),
            "pseudo masks (WeakLabelTrainer)": (pseudo, "WeakLabelTrainer")}
    test_json = json.loads((test / "dataset.json").read_text())
    test_settings = read_settings(test_json, str(test / "dataset.json"))
    test_labels = read_image_labels(test_settings.method("image_labels"), test, test_settings.source)
    results = {}
    for arm, (dataset, trainer_name) in arms.items():
        benchlib.plan_and_preprocess(_dataset_id(dataset), "2d", num_processes=2)
        trainer, timing, _ = benchlib.train(trainer_name, dataset.name, device_name=device.type, configuration="2d",
                                         epochs=args.segmenter_epochs, iterations=args.segmenter_iterations)
        predictions = args.workdir / f"pred_{trainer_name}"
        dice = benchlib.predict_and_evaluate(trainer, test / "imagesTr", test / "labelsTr", predictions,
                                             device_name=device.type, labels_to_evaluate=[1])
        split = score_prediction_folder(test / "labelsTr", predictions, test_labels,
                                        file_ending=test_json["file_ending"], lesion_labels=(1,))
        results[arm] = {"dataset": dataset.name, **timing, "test_lesion_dice": round(dice[1], 4),
                        "by_image_label": split.to_json()}
        print(f"[stage B] {arm}: held-out lesion Dice {dice[1]:.3f} (nnU-Net's mean, normal images included); "
              f"diseased images {split.diseased_dice:.3f} (n={split.num_diseased}); normal images: "
              f"{split.false_positive_rate:.0%} with a false positive, {split.mean_false_positive_voxels:.1f} "
              f"false-positive voxels on average (n={split.num_normal})")
    true_arm, pseudo_arm = results["true masks (nnUNetTrainer)"], results["pseudo masks (WeakLabelTrainer)"]
    return {"test_dataset": test.name, "test_images": args.num_test,
            "schedule": f"{args.segmenter_epochs} x {args.segmenter_iterations}", "arms": results,
            "pseudo_over_true": _ratio(pseudo_arm["test_lesion_dice"], true_arm["test_lesion_dice"]),
            "pseudo_over_true_diseased": _ratio(pseudo_arm["by_image_label"]["diseased_dice"],
                                                true_arm["by_image_label"]["diseased_dice"])}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded, or None when either is undefined or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(args.workdir / name)  # self-contained: never the user's nnU-Net folders
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = {"device": str(device), "torch_threads": torch.get_num_threads(), "datasets": {}}
    for kind in args.data:
        results["datasets"][kind] = _bench_dataset(kind, args, device)
    output = args.output or args.workdir / "results.json"
    output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
