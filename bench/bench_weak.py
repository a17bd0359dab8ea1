"""Benchmark of weak supervision (CLTN, paper 003).

Stage A: Dice of the GAN's pseudo masks against the true masks (never seen by the GAN), GAN time per iteration, and
the exported pseudo-mask dataset. Stage B (skin data; ``--segmenter-epochs 0`` skips it): nnU-Net 2d trained on the
pseudo masks (``WeakLabelTrainer``) and on the true masks (``nnUNetTrainer``), same plans and schedule, fold
``all``, both evaluated with nnU-Net's predictor and evaluation on held-out images (another seed) against their true
masks; the ratio of the two lesion Dice values is the issue's goal (>= 70 %).

Data: ISIC-like synthetic skin images (``--data skin``; RGB, dark irregular lesions, normal images without) and/or
3D liver phantoms (``--data phantom``; axial slices, tumour-free slices normal, lesion label 2). True masks are only
used for evaluation.

GPU goal (issue 8): 7000 GAN iterations at 256 px; final nnU-Net Dice on pseudo masks ≥ 70 % of the true-mask
model's. CPU smoke scale: ``python bench/bench_weak.py --size 32 --iterations 200 --base-channels 8``.

Example (GPU)::

    python bench/bench_weak.py --workdir /data/bench_weak --data skin phantom --size 256 --iterations 7000 \\
        -device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import benchlib


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("bench_weak_work"), help="created if missing")
    parser.add_argument("--data", nargs="+", choices=("skin", "phantom"), default=["skin"])
    parser.add_argument("--num-diseased", type=int, default=24)
    parser.add_argument("--num-normal", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=64, help="side of the synthetic skin images")
    parser.add_argument("--size", type=int, default=64, help="GAN image side")
    parser.add_argument("--iterations", type=int, default=7000)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=54)
    parser.add_argument("--discriminator-channels", type=int, default=64)
    parser.add_argument("--res-blocks", type=int, default=4)
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
                        loss_weights=loss_weights_preset("isic" if kind == "skin" else "brats"))
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
    """nnU-Net on pseudo masks vs on true masks, evaluated on held-out skin images against their true masks."""
    from nnunet_mm.weak.synthetic import write_skin_lesion_dataset

    test = write_skin_lesion_dataset(source.parent, dataset_id=_dataset_id(pseudo) + 1, name="BenchSkinTest",
                                     num_diseased=args.num_test // 2, num_normal=args.num_test - args.num_test // 2,
                                     size=args.image_size, seed=args.seed + 1000, overwrite=True)
    arms = {"true masks (nnUNetTrainer)": (source, "nnUNetTrainer"),
            "pseudo masks (WeakLabelTrainer)": (pseudo, "WeakLabelTrainer")}
    results = {}
    for arm, (dataset, trainer_name) in arms.items():
        benchlib.plan_and_preprocess(_dataset_id(dataset), "2d", num_processes=2)
        trainer, timing, _ = benchlib.train(trainer_name, dataset.name, device_name=device.type, configuration="2d",
                                         epochs=args.segmenter_epochs, iterations=args.segmenter_iterations)
        dice = benchlib.predict_and_evaluate(trainer, test / "imagesTr", test / "labelsTr",
                                             args.workdir / f"pred_{trainer_name}", device_name=device.type,
                                             labels_to_evaluate=[1])
        results[arm] = {"dataset": dataset.name, **timing, "test_lesion_dice": round(dice[1], 4)}
        print(f"[stage B] {arm}: held-out lesion Dice {dice[1]:.3f}")
    true_dice = results["true masks (nnUNetTrainer)"]["test_lesion_dice"]
    pseudo_dice = results["pseudo masks (WeakLabelTrainer)"]["test_lesion_dice"]
    return {"test_dataset": test.name, "test_images": args.num_test,
            "schedule": f"{args.segmenter_epochs} x {args.segmenter_iterations}", "arms": results,
            "pseudo_over_true": round(pseudo_dice / true_dice, 3) if true_dice > 0 else None}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
