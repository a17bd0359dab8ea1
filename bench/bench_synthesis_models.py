"""Training time of the synthesis networks (FFC inpainter, 3D autoencoder, latent diffusion) on phantom data.

Designed for a GPU (the issue's goal: training time on an H100 for a documented small configuration), runnable on
a CPU with ``--preset cpu``. Data: seeded multi-phase liver phantoms (``nnunet_mm.phantom``); the inpainter reads
them as a raw dataset (its real input), the 3D networks as nnU-Net-style preprocessed cases written with nnU-Net's
own blosc2 writer (intensities (HU − 100) / 50, close to nnU-Net's CT normalisation of these phantoms; no planning
run, so the benchmark measures the networks only).

For every network: the configuration, seconds per training step (median after 2 warm-up steps), the wall time of
the whole run, the first and last loss (mean of 5 steps), and peak GPU memory. Results: ``OUT/results.json`` and a
Markdown table on stdout; the models' loss curves are in ``OUT/<network>/losses.png``.

    python bench/bench_synthesis_models.py --preset gpu -o bench_out            # H100
    nice -n 10 python bench/bench_synthesis_models.py --preset cpu -o /tmp/b    # CPU, minutes
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PRESETS = {
    # GPU: the paper's geometry where affordable (LaMa ngf 64 / 9 blocks at 256², AE 64³ → 16³×8, LDM 64/128/256)
    "gpu": dict(cases=8, shape=(64, 192, 192), steps=200,
                inpainter=dict(base_channels=64, num_blocks=9, patch_size=256, batch_size=8),
                autoencoder=dict(channels=(32, 64, 64), latent_channels=8, norm_num_groups=16,
                                 patch_size=(64, 64, 64), batch_size=2, adversarial_start=100),
                diffusion=dict(channels=(64, 128, 256), attention_levels=(False, False, True), num_head_channels=32,
                               norm_num_groups=32, patch_size=(64, 64, 64), batch_size=2, num_inference_steps=50)),
    # CPU: everything scaled down so that the three runs take a few minutes on two cores
    "cpu": dict(cases=4, shape=(24, 64, 64), steps=20,
                inpainter=dict(base_channels=16, num_blocks=3, patch_size=64, batch_size=4),
                autoencoder=dict(channels=(8, 16, 16), latent_channels=4, norm_num_groups=8,
                                 patch_size=(16, 32, 32), batch_size=2, adversarial_start=10,
                                 discriminator_channels=8, discriminator_layers=2),
                diffusion=dict(channels=(16, 32), attention_levels=(False, True), num_head_channels=16,
                               norm_num_groups=8, patch_size=(16, 32, 32), batch_size=2, num_inference_steps=10)),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu", help="configuration [default: gpu]")
    parser.add_argument("--steps", type=int, default=None, help="training steps per network [default: preset's]")
    parser.add_argument("-o", "--output", required=True, help="work and result folder (replaced)")
    parser.add_argument("-device", default=None, choices=("cuda", "cpu"), help="default: cuda if available")
    parser.add_argument("--only", nargs="+", choices=("inpainter", "autoencoder", "diffusion"), default=None)
    return parser


def _write_data(root: Path, cases: int, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunet_mm.phantom import case_seed, make_case, write_nnunet_raw

    raw = write_nnunet_raw(root / "raw", dataset_id=990, name="BenchPhantom", num_training=cases, shape_zyx=shape)
    preprocessed = root / "preprocessed" / "nnUNetPlans_3d_fullres"
    preprocessed.mkdir(parents=True)
    for index in range(cases):
        case = make_case(case_seed(0, index), shape_zyx=shape)
        data = np.stack([case.image_on_reference_grid(p) for p in case.phase_names]).astype(np.float32)
        data = (np.clip(data, -200, 400) - 100.0) / 50.0
        nnUNetDatasetBlosc2.save_case(data, case.label[None].astype(np.int8), {}, str(preprocessed / f"c{index:03d}"))
    return raw, preprocessed


class StepClock:
    """``step_callback`` of the training functions: wall time of every training step (GPU synchronised)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []
        self._last = time.perf_counter()

    def __call__(self, step: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def _summary(name: str, config, result, wall: float, clock: StepClock, device: torch.device, loss_key: str) -> dict:
    losses = result.history[loss_key]
    steady = clock.times[2:] or clock.times  # the first steps include cuDNN autotuning and allocations
    return {"network": name,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
            "steps": result.step, "seconds_per_step": statistics.median(steady), "wall_seconds": wall,
            "loss": loss_key, "loss_first5": float(np.mean(losses[:5])), "loss_last5": float(np.mean(losses[-5:])),
            "peak_gpu_memory_gb": (torch.cuda.max_memory_allocated() / 2 ** 30) if device.type == "cuda" else None}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from nnunet_mm.synthesis.autoencoder import AutoencoderConfig, train_autoencoder
    from nnunet_mm.synthesis.inpainting import InpainterConfig, train_inpainter
    from nnunet_mm.synthesis.latent_diffusion import DiffusionConfig, train_diffusion
    from nnunet_mm.synthesis.model_data import PreprocessedCrops, liver_slices

    preset = PRESETS[args.preset]
    steps = args.steps or preset["steps"]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    raw, preprocessed = _write_data(out / "data", preset["cases"], preset["shape"])
    print(f"data: {preset['cases']} phantom cases {preset['shape']} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    only = set(args.only or ("inpainter", "autoencoder", "diffusion"))
    results = []

    def run(name: str, loss_key: str, config, train) -> None:
        clock = StepClock(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = train(config, clock)
        wall = time.perf_counter() - start
        results.append(_summary(name, config, result, wall, clock, device, loss_key))
        print(f"{name}: {results[-1]['seconds_per_step']:.3f} s/step, {wall:.1f} s total", file=sys.stderr)

    if "inpainter" in only:
        config = InpainterConfig(**preset["inpainter"], steps=steps, checkpoint_every=10 ** 9)
        slices = liver_slices(raw, patch_size=config.patch_size, liver_label=1, tumour_label=2, progress=False)
        run("FFC inpainter (2D)", "l1_hole", config,
            lambda c, clock: train_inpainter(slices, c, out / "inpainter", device=device, progress=False,
                                             step_callback=clock))
    if only & {"autoencoder", "diffusion"}:
        config = AutoencoderConfig(**preset["autoencoder"], steps=steps, checkpoint_every=10 ** 9)
        crops = PreprocessedCrops(preprocessed, config.patch_size, center_labels=(1, 2))
        run("3D autoencoder (KL)", "l1", config,
            lambda c, clock: train_autoencoder(crops, c, out / "autoencoder", device=device, progress=False,
                                               step_callback=clock))
    if "diffusion" in only:
        config = DiffusionConfig(**preset["diffusion"], steps=steps, checkpoint_every=10 ** 9)
        tumour_crops = PreprocessedCrops(preprocessed, config.patch_size, center_labels=(2,),
                                         foreground_fraction=1.0)
        run("latent diffusion (3D)", "mse", config,
            lambda c, clock: train_diffusion(tumour_crops, out / "autoencoder", c, out / "latent_diffusion",
                                             tumour_label=2, device=device, progress=False, step_callback=clock))
        results[-1]["sampling_seconds_per_patch"] = _time_sampling(out / "latent_diffusion", preset, device)
    (out / "results.json").write_text(json.dumps(
        {"preset": args.preset, "device": str(device),
         "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
         "torch_threads": torch.get_num_threads(), "results": results}, indent=2), encoding="utf-8")
    print("| network | configuration | steps | s/step | total s | loss, mean of first → last 5 steps |")
    print("|---|---|---|---|---|---|")
    for r in results:
        config = r["config"]
        brief = ", ".join(f"{k}={config[k]}" for k in ("patch_size", "base_channels", "num_blocks", "channels",
                                                       "batch_size") if k in config)
        print(f"| {r['network']} | {brief} | {r['steps']} | {r['seconds_per_step']:.3f} | {r['wall_seconds']:.1f} | "
              f"{r['loss']} {r['loss_first5']:.4f} → {r['loss_last5']:.4f} |")
    if results and "sampling_seconds_per_patch" in results[-1]:
        print(f"\nlatent diffusion sampling ({preset['diffusion']['num_inference_steps']} DDIM steps, every phase "
              f"of one {list(preset['diffusion']['patch_size'])} patch): "
              f"{results[-1]['sampling_seconds_per_patch']:.2f} s")
    return 0


def _time_sampling(folder: Path, preset: dict, device: torch.device) -> float:
    from nnunet_mm.synthesis.latent_diffusion import LatentDiffusionSynthesizer

    synthesizer = LatentDiffusionSynthesizer.from_folder(folder, device)
    patch = preset["diffusion"]["patch_size"]
    images = torch.randn(1, synthesizer.num_phases, *patch, device=device)
    mask = torch.zeros(1, 1, *patch, dtype=torch.bool, device=device)
    centre = [p // 2 for p in patch]
    mask[(0, 0, *[slice(c - p // 8, c + p // 8) for c, p in zip(centre, patch)])] = True
    generator = torch.Generator(device=device).manual_seed(0)
    synthesizer(images, mask, generator)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    synthesizer(images, mask, generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
