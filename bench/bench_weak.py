"""Benchmark of weak supervision (CLTN, paper 003), stage A: Dice of the GAN's pseudo masks against the true masks
(never seen by the GAN), GAN time per iteration, and the exported pseudo-mask dataset. Stage B (nnU-Net on the
pseudo masks vs on the true masks) runs with nnU-Net's commands on the exported datasets; the commands are printed
at the end.

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
    target = raw / f"{source.name}PseudoMasks"
    export_pseudo_mask_dataset(source, model_dir, target, method=args.method, lesion_labels=lesion_labels,
                               overwrite=True, device=device)
    report = json.loads((target / "pseudo_mask_dice.json").read_text())
    result = {"images_diseased": sum(i.image_label == "diseased" for i in images),
              "images_normal": sum(i.image_label == "normal" for i in images),
              "gan_iterations": args.iterations, "gan_seconds": round(gan_seconds, 1),
              "seconds_per_iteration": round(gan_seconds / max(args.iterations, 1), 3),
              "pseudo_mask_dice_mean": round(report["mean_dice"], 4), "method": args.method,
              "overview_png": str(target / "pseudo_masks.png"), "loss_png": str(model_dir / "cltn_losses.png")}
    print(f"[{kind}] pseudo-mask Dice {report['mean_dice']:.3f} over {len(report['per_case'])} diseased case(s); "
          f"GAN {gan_seconds:.0f} s for {args.iterations} iterations")
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(name, str(args.workdir / name))
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = {"device": str(device), "torch_threads": torch.get_num_threads(), "datasets": {}}
    for kind in args.data:
        results["datasets"][kind] = _bench_dataset(kind, args, device)
    output = args.output or args.workdir / "results.json"
    output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    print("stage B (segmenters), per dataset: nnUNetv2_plan_and_preprocess -d <pseudo id> <source id> -c 2d; "
          "nnUNetv2_train <pseudo id> 2d 0 -tr WeakLabelTrainer; nnUNetv2_train <source id> 2d 0 "
          "-tr MultiModalTrainer; predict held-out images with both and nnUNetv2_evaluate_simple against the true masks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
