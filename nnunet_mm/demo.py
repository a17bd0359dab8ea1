"""``nnunet_mm demo``: stock nnU-Net and the plugin on the same phantom, with the commands a user would type.

Steps (each nnU-Net step is the real command, run in a subprocess with only nnU-Net's path variables added):

1. ``nnunet_mm phantom``: seeded four-phase liver CT phantoms (portal-venous reference, arterial, delayed,
   native) in the per-case folder layout, every phase on its own grid and misregistered; a held-out set from
   another generator seed.
2. ``nnunet_mm convert 511``: every phase resampled onto the portal-venous grid → ``Dataset511_MultiPhaseLiver``.
3. ``nnUNetv2_plan_and_preprocess -d 511 -c 2d --verify_dataset_integrity`` (planned once for both trainers).
4. ``nnUNetv2_train 511 2d 0`` with ``-tr nnUNetTrainer_demo`` (stock nnU-Net) and ``-tr MultiModalTrainer_demo``
   (misalignment + modality dropout), both 10 epochs × 25 iterations.
5. ``nnUNetv2_predict`` on the held-out cases with all phases; ``nnunet_mm predict`` on the same cases with the
   arterial and native phases missing (filled as modality dropout trained the plugin's model to expect).
6. ``nnunet_mm compare``: Dice and lesion-wise detection of the four predictions against the labels, paired
   differences to stock nnU-Net with bootstrap intervals over cases; a PNG overlay of one held-out case.

The phantom is calibrated for the demo (3–6 lesions, 5–8 HU noise, 32 slices of 64 × 64), not the methods:
stock nnU-Net starts finding the lesions after about 150 updates on a 2-core CPU (tumour Dice 0.69 at 150, 0.79
at 200 and 250 in the calibration run); the demo trains 250.
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
from typing import Mapping, Sequence

from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.io.raw_dataset import available_channel_files
from nnunet_mm.io.staging import check_output

DATASET_ID = 511
DATASET_NAME = "Dataset511_MultiPhaseLiver"
LABELS = {1: "liver", 2: "tumor"}
CONFIGURATION = "2d"
#: the trainers compared: name in the report → ``nnUNetv2_train -tr`` name
TRAINERS = {"stock": "nnUNetTrainer_demo", "multimodal": "MultiModalTrainer_demo"}
PHANTOM_OPTIONS = ["--noise-hu", "5", "8", "--lesions", "3", "6"]


@dataclass
class DemoResult:
    """What the demo produced: Dice per label for each prediction run, step timings and output paths."""

    dice: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    overlay_png: Path | None = None
    compare_md: Path | None = None
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
    with open(log_file, "w", encoding="utf-8") as log:
        completed = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    result.seconds[step] = round(time.perf_counter() - start, 1)
    if completed.returncode != 0:
        tail = "".join(log_file.read_text(errors="replace", encoding="utf-8").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"step '{step}' failed (exit {completed.returncode}); last lines of {log_file}:\n{tail}")
    print(f"  done in {result.seconds[step]} s (log: {log_file})", flush=True)


def _copy_channels(source: Path, target: Path, channels: Sequence[int]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for files in available_channel_files(source, ".nii.gz", None).values():
        for channel in channels:
            if channel in files:
                shutil.copy2(files[channel], target / files[channel].name)


def _read_dice(compare_json: Path) -> dict[str, dict[str, float]]:
    """``{run: {label: mean Dice}}`` from ``nnunet_mm compare``'s report."""
    summary = json.loads(compare_json.read_text(encoding="utf-8"))["summary"]
    runs = next(iter(summary.values())).keys()
    return {run: {label: round(summary[label][run]["dice_mean"], 3) for label in summary} for run in runs}


def run_demo(workdir: Path, *, num_training: int = 10, num_test: int = 6, shape_zyx: Sequence[int] = (32, 64, 64),
             trainers: Mapping[str, str] = TRAINERS, device: str | None = None,
             missing_channels: Sequence[int] = (1, 3), overwrite: bool = False) -> DemoResult:
    """Run the whole cycle in ``workdir`` and return the Dice table (see the module docstring).

    Args:
        trainers: report name → trainer class name; the first is the baseline of the comparison.

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
                          "--seed", "0", "--shape", *shape, *PHANTOM_OPTIONS], env, result, logs)
    _run("phantom_test", mm + ["phantom", "--layout", "multiphase", "-o", str(workdir / "source_test"),
                               "-n", str(num_test), "--seed", "1000", "--shape", *shape, *PHANTOM_OPTIONS],
         env, result, logs)
    _run("convert", mm + ["convert", str(DATASET_ID), str(workdir / "source")], env, result, logs)
    _run("convert_test", mm + ["convert", str(DATASET_ID), str(workdir / "source_test"), "--output-root", str(test_raw),
                               "--no-qa"], env, result, logs)
    _run("plan_and_preprocess", ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION,
                                 "-np", "2", "-npfp", "2", "--verify_dataset_integrity"], env, result, logs)
    _copy_channels(test_images, workdir / "test_images_missing", available)
    arms = {}
    for name, trainer in trainers.items():
        _run(f"train_{name}", ["nnUNetv2_train", str(DATASET_ID), CONFIGURATION, "0", "-tr", trainer,
                               "-device", device], env, result, logs)
        model = ["-d", str(DATASET_ID), "-c", CONFIGURATION, "-tr", trainer, "-f", "0", "-device", device]
        arms[name] = workdir / f"pred_{name}"
        _run(f"predict_{name}", ["nnUNetv2_predict", "-i", str(test_images), "-o", str(arms[name]), *model,
                                 "-npp", "0", "-nps", "0", "--disable_progress_bar"], env, result, logs)
        arms[f"{name}_missing"] = workdir / f"pred_{name}_missing"
        _run(f"predict_{name}_missing", mm + ["predict", "-i", str(workdir / "test_images_missing"),
                                              "-o", str(arms[f"{name}_missing"]), *model, "--disable-progress-bar"],
             env, result, logs)
    _run("compare", mm + ["compare", *[f"--arm={name}={folder}" for name, folder in arms.items()],
                          "--ref", str(test_labels), "-o", str(workdir / "compare"), "--resamples", "2000",
                          "--disable-progress-bar"], env, result, logs)
    result.dice = _read_dice(workdir / "compare" / "compare.json")
    result.compare_md = workdir / "compare" / "compare.md"
    result.overlay_png = save_overlay(test_images, test_labels, arms, workdir / "demo_overlay.png",
                                      missing_channels=missing_channels)
    return result


@figure_style()
def save_overlay(images: Path, labels: Path, predictions: Mapping[str, Path], png: Path, *,
                 missing_channels: Sequence[int]) -> Path:
    """PNG of the held-out case with the most tumour: its slice with the most tumour in the reference phase, the
    ground truth and every prediction outlined (green liver, red tumour), each titled with its tumour Dice on the
    case."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk
    from matplotlib.lines import Line2D

    def label_map(folder: Path, case: str) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz")))

    cases = sorted(p.name[: -len(".nii.gz")] for p in labels.glob("*.nii.gz"))
    case = max(cases, key=lambda c: int((label_map(labels, c) == 2).sum()))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(images / f"{case}_0000.nii.gz")))
    panels = {"ground truth": label_map(labels, case)}
    panels.update({name.replace("_missing", f" (phases {list(missing_channels)} missing)"): label_map(folder, case)
                   for name, folder in predictions.items()})
    truth = panels["ground truth"]
    z = int(np.argmax((truth == 2).sum(axis=(1, 2)))) if (truth == 2).any() else truth.shape[0] // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.9))
    for axis, (title, labels_z) in zip(axes, panels.items()):
        axis.imshow(np.clip(image[z], -100, 250), cmap="gray")
        for value, colour in ((1, "tab:green"), (2, "tab:red")):
            if (labels_z[z] == value).any():
                axis.contour(labels_z[z] == value, levels=[0.5], colors=colour, linewidths=1.2)
        if title != "ground truth":
            predicted, reference = labels_z == 2, truth == 2
            total = predicted.sum() + reference.sum()
            dice = 2 * (predicted & reference).sum() / total if total else float("nan")
            title = f"{title}\ntumour Dice {dice:.2f} (whole case)"
        axis.set_title(title, fontsize=8)
        axis.axis("off")
    fig.legend(handles=[Line2D([], [], color="tab:green", label="liver"), Line2D([], [], color="tab:red",
                                                                                  label="tumour")],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"held-out case {case}, axial slice {z} of {truth.shape[0]}, portal-venous phase", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def format_dice_table(result: DemoResult) -> str:
    """Markdown table: one row per prediction run, one column per label (mean Dice over the held-out cases)."""
    labels = list(LABELS.values())
    rows = ["| prediction | " + " | ".join(f"Dice {name}" for name in labels) + " |",
            "|---|" + "---|" * len(labels)]
    for run_name, dice in result.dice.items():
        rows.append(f"| {run_name} | " + " | ".join(f"{dice.get(name, float('nan')):.3f}" for name in labels) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``nnunet_mm demo``: run the demo, print the table and where the report and the overlay are."""
    from nnunet_mm.cli.common import add_deprecated_alias

    parser = argparse.ArgumentParser(prog="nnunet_mm demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo_work", help="folder for everything [default: %(default)s]")
    parser.add_argument("--num-training", type=int, default=10, help="training cases [default: %(default)s]")
    parser.add_argument("--num-test", type=int, default=6, help="held-out cases [default: %(default)s]")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"),
                        help="phantom grid [default: 32 64 64]")
    parser.add_argument("-device", choices=("cuda", "cpu", "mps"), default=None,
                        help="[default: cuda if available, else cpu]")
    add_deprecated_alias(parser, "--device", "-device")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --workdir")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run_demo(Path(args.workdir), num_training=args.num_training, num_test=args.num_test,
                      shape_zyx=args.shape, device=args.device, overwrite=args.overwrite)
    table = format_dice_table(result)
    (result.workdir / "dice_table.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    print(f"\npaired comparison with stock nnU-Net (bootstrap intervals, lesion detection): {result.compare_md}"
          f"\noverlay: {result.overlay_png}\nstep seconds: {result.seconds}\n"
          f"total: {time.perf_counter() - start:.0f} s")
    return 0
