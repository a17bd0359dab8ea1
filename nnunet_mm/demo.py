"""``nnunet_mm demo``: the whole cycle on a phantom, with the commands a user would type.

Steps (each nnU-Net step is the real command, run in a subprocess with only nnU-Net's path variables added):

1. ``nnunet_mm phantom``: seeded four-phase liver CT phantoms in the per-case folder layout, phases on their own
   grids and misregistered; a second, held-out set for testing.
2. ``nnunet_mm convert 511``: resample every phase onto the portal-venous grid → ``Dataset511_MultiPhaseLiver``.
3. ``nnUNetv2_plan_and_preprocess -d 511 -c 3d_fullres --verify_dataset_integrity``.
4. ``nnUNetv2_train 511 3d_fullres 0 -tr MultiModalTrainer_debug`` (GPU if present, else CPU).
5. ``nnUNetv2_predict`` on the held-out cases, and ``nnunet_mm predict`` on the same cases with phases missing.
6. ``nnUNetv2_evaluate_simple`` for both; a Dice table and a PNG overlay.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.io.raw_dataset import available_channel_files
from nnunet_mm.io.staging import check_output

DATASET_ID = 511
DATASET_NAME = "Dataset511_MultiPhaseLiver"
LABELS = {1: "liver", 2: "tumor"}


@dataclass
class DemoResult:
    """What the demo produced: Dice per label for each prediction run, step timings and output paths."""

    dice: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    overlay_png: Path | None = None
    workdir: Path | None = None


def _command_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(workdir / "nnUNet_raw"), nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
               nnUNet_results=str(workdir / "nnUNet_results"))
    env.setdefault("nnUNet_def_n_proc", "2")
    env.setdefault("nnUNet_n_proc_DA", "2")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _run(step: str, command: list[str], env: dict[str, str], result: DemoResult, log_folder: Path) -> None:
    """Run one command, echoing it; its output goes to ``log_folder/<step>.log`` and is shown if it fails."""
    print(f"\n$ {' '.join(command)}", flush=True)
    log_file = log_folder / f"{step}.log"
    start = time.perf_counter()
    with open(log_file, "w") as log:
        completed = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    result.seconds[step] = round(time.perf_counter() - start, 1)
    if completed.returncode != 0:
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"step '{step}' failed (exit {completed.returncode}); last lines of {log_file}:\n{tail}")
    print(f"  done in {result.seconds[step]} s (log: {log_file})", flush=True)


def _copy_channels(source: Path, target: Path, channels: Sequence[int]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for files in available_channel_files(source, ".nii.gz", None).values():
        for channel in channels:
            if channel in files:
                shutil.copy2(files[channel], target / files[channel].name)


def _read_dice(summary_file: Path) -> dict[str, float]:
    summary = json.loads(summary_file.read_text())
    return {LABELS.get(int(k), k): round(v["Dice"], 3) for k, v in summary["mean"].items()}


def run_demo(workdir: Path, *, num_training: int = 8, num_test: int = 2, shape_zyx: Sequence[int] = (32, 64, 64),
             trainer: str = "MultiModalTrainer_debug", device: str | None = None, missing_channels: Sequence[int] = (1, 3),
             overwrite: bool = False) -> DemoResult:
    """Run the whole cycle in ``workdir`` and return the Dice table.

    Raises:
        FileExistsError: ``workdir`` is not empty and ``overwrite`` is False.
        RuntimeError: a step failed; the message holds the end of its log.
    """
    workdir = check_output(Path(workdir).resolve(), overwrite=overwrite)
    if workdir.is_dir() and any(workdir.iterdir()):  # only with overwrite
        shutil.rmtree(workdir)
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env = _command_env(workdir)
    result = DemoResult(workdir=workdir)
    mm = [sys.executable, "-m", "nnunet_mm.cli.main"]
    shape = [str(s) for s in shape_zyx]
    test_raw = workdir / "test_raw"
    test_images, test_labels = test_raw / DATASET_NAME / "imagesTr", test_raw / DATASET_NAME / "labelsTr"
    available = [c for c in range(4) if c not in missing_channels]

    _run("phantom", mm + ["phantom", "--layout", "multiphase", "-o", str(workdir / "source"), "-n", str(num_training),
                          "--seed", "0", "--shape", *shape, "--different-grids"], env, result, logs)
    _run("phantom_test", mm + ["phantom", "--layout", "multiphase", "-o", str(workdir / "source_test"),
                               "-n", str(num_test), "--seed", "1000", "--shape", *shape, "--different-grids"],
         env, result, logs)
    _run("convert", mm + ["convert", str(DATASET_ID), str(workdir / "source")], env, result, logs)
    _run("convert_test", mm + ["convert", str(DATASET_ID), str(workdir / "source_test"), "--output-root", str(test_raw),
                               "--no-qa"], env, result, logs)
    _run("plan_and_preprocess", ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres",
                                 "-np", "2", "-npfp", "2", "--verify_dataset_integrity"], env, result, logs)
    _run("train", ["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-device", device],
         env, result, logs)
    predict = ["-d", str(DATASET_ID), "-c", "3d_fullres", "-tr", trainer, "-f", "0", "-device", device]
    _run("predict", ["nnUNetv2_predict", "-i", str(test_images), "-o", str(workdir / "pred_all_phases"), *predict,
                     "-npp", "0", "-nps", "0", "--disable_progress_bar"], env, result, logs)
    _copy_channels(test_images, workdir / "test_images_missing", available)
    _run("predict_missing", mm + ["predict", "-i", str(workdir / "test_images_missing"),
                                  "-o", str(workdir / "pred_missing_phases"), *predict, "--disable_progress_bar"],
         env, result, logs)
    for run_name in ("pred_all_phases", "pred_missing_phases"):
        _run(f"evaluate_{run_name}", ["nnUNetv2_evaluate_simple", str(test_labels), str(workdir / run_name),
                                      "-l", "1", "2"], env, result, logs)
        result.dice[run_name] = _read_dice(workdir / run_name / "summary.json")
    result.overlay_png = save_overlay(test_images, test_labels, workdir / "pred_all_phases",
                                      workdir / "pred_missing_phases", workdir / "demo_overlay.png",
                                      missing_channels=missing_channels)
    return result


@figure_style()
def save_overlay(images: Path, labels: Path, prediction_all: Path, prediction_missing: Path, png: Path, *,
                 missing_channels: Sequence[int]) -> Path:
    """PNG of one held-out case: the reference phase with ground truth and both predictions outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    case = sorted(p.name[: -len(".nii.gz")] for p in labels.glob("*.nii.gz"))[0]
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(images / f"{case}_0000.nii.gz")))
    volumes = {"ground truth": labels, "all phases": prediction_all,
               f"phases {list(missing_channels)} missing": prediction_missing}
    label_maps = {title: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz")))
                  for title, folder in volumes.items()}
    truth = label_maps["ground truth"]
    z = int(np.argmax((truth == 2).sum(axis=(1, 2)))) if (truth == 2).any() else truth.shape[0] // 2
    fig, axes = plt.subplots(1, len(label_maps), figsize=(4 * len(label_maps), 4.3))
    for axis, (title, label_map) in zip(axes, label_maps.items()):
        axis.imshow(np.clip(image[z], -100, 250), cmap="gray")
        for value, colour in ((1, "tab:green"), (2, "tab:red")):
            if (label_map[z] == value).any():
                axis.contour(label_map[z] == value, levels=[0.5], colors=colour, linewidths=1.2)
        axis.set_title(f"{title}\n(green liver, red tumour)", fontsize=9)
        axis.axis("off")
    fig.suptitle(f"{case}, slice {z}, portal-venous phase", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def format_dice_table(result: DemoResult) -> str:
    """Markdown table: one row per prediction run, one column per label."""
    labels = list(LABELS.values())
    rows = ["| prediction | " + " | ".join(f"Dice {name}" for name in labels) + " |",
            "|---|" + "---|" * len(labels)]
    for run_name, dice in result.dice.items():
        rows.append(f"| {run_name} | " + " | ".join(f"{dice.get(name, float('nan')):.3f}" for name in labels) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnunet_mm demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo_work", help="folder for everything [default: %(default)s]")
    parser.add_argument("--num-training", type=int, default=8, help="training cases [default: %(default)s]")
    parser.add_argument("--num-test", type=int, default=2, help="held-out cases [default: %(default)s]")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"))
    parser.add_argument("--trainer", default="MultiModalTrainer_debug", help="[default: %(default)s]")
    parser.add_argument("--device", choices=("cuda", "cpu", "mps"), default=None,
                        help="[default: cuda if available, else cpu]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --workdir")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run_demo(Path(args.workdir), num_training=args.num_training, num_test=args.num_test,
                      shape_zyx=args.shape, trainer=args.trainer, device=args.device, overwrite=args.overwrite)
    table = format_dice_table(result)
    (result.workdir / "dice_table.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\noverlay: {result.overlay_png}\nstep seconds: {result.seconds}\n"
          f"total: {time.perf_counter() - start:.0f} s")
    return 0
