"""The whole synthetic-tumour pipeline of the README at tiny size, through the user's commands:
``train-inpainter`` → ``make-normal`` → plan (3d_fullres) → ``train-autoencoder`` → ``train-diffusion`` →
``nnUNetv2_train … -tr SynthTumorTrainer_debug`` with the diffusion synthesizer → ``nnUNetv2_predict``; then
``synth-pool`` → ``nnUNetv2_train`` with the pool (nnU-Net's multi-process loader) → ``nnunet_mm predict``."""
from __future__ import annotations

import json
import re

import pytest

from nnunet_mm.cli.main import main as nnunet_mm

pytestmark = pytest.mark.slow

TINY_AUTOENCODER = ["--steps", "2", "--batch-size", "1", "--patch-size", "8", "16", "16", "--channels", "8", "8",
                    "--latent-channels", "2", "--norm-groups", "4", "--discriminator-layers", "1", "-device", "cpu"]
TINY_DIFFUSION = ["--steps", "2", "--batch-size", "1", "--patch-size", "8", "16", "16", "--channels", "8", "16",
                  "--norm-groups", "4", "--head-channels", "8", "--inference-steps", "2", "-device", "cpu"]


def _synthetic_fractions(log: str) -> list[float]:
    return [float(m) for m in re.findall(r"synthetic tumours in ([0-9.]+) %", log)]


def test_inpainter_to_prediction_with_the_diffusion_synthesizer_and_its_pool(cli, two_phase_liver, plan_in_process):
    cli.adopt(two_phase_liver)
    assert nnunet_mm(["train-inpainter", "-d", "590", "--steps", "2", "--batch-size", "1", "--patch-size", "32",
                      "--base-channels", "8", "--blocks", "1", "--max-slices-per-case", "2", "-device", "cpu"]) == 0
    assert nnunet_mm(["make-normal", "-d", "590", "--target-id", "591", "-device", "cpu"]) == 0
    normal = cli.raw / "Dataset591_TwoPhaseLiver_normal"
    assert len(list((normal / "labelsTr").glob("*_normal.nii.gz"))) == 5
    splits = json.loads((normal / "splits_final.json").read_text(encoding="utf-8"))
    assert all(("phantom_000" in fold["train"]) == ("phantom_000_normal" in fold["train"]) for fold in splits)

    plan_in_process(591, ("3d_fullres",))
    name = normal.name
    assert nnunet_mm(["train-autoencoder", "-d", "591", "-c", "3d_fullres", *TINY_AUTOENCODER]) == 0
    assert nnunet_mm(["train-diffusion", "-d", "591", "-c", "3d_fullres", *TINY_DIFFUSION]) == 0
    models = cli.preprocessed / name / "nnunet_mm_synthesis"
    assert (models / "latent_diffusion" / "denoiser.safetensors").is_file()

    # online diffusion: every sample with liver gets tumours, painted by the latent diffusion model
    cli.add_to_block(name, seed=0, synthesis={"synthesizer": "diffusion", "probability": 1.0})
    cli.run("nnUNetv2_train", "591", "3d_fullres", "0", "-tr", "SynthTumorTrainer_debug", "-device", "cpu")
    run = cli.results / name / "SynthTumorTrainer_debug__nnUNetPlans__3d_fullres"
    log = next((run / "fold_0").glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert f"diffusion synthesizer, models from {models / 'latent_diffusion'}" in log
    assert len(_synthetic_fractions(log)) == 2 and all(f > 0 for f in _synthetic_fractions(log))
    # the grouped splits of make-normal were adopted: fold 0 validates a case and its twin together
    validated = {p.name[:-len(".nii.gz")] for p in (run / "fold_0" / "validation").glob("*.nii.gz")}
    assert validated and all((case[:-len("_normal")] if case.endswith("_normal") else case + "_normal") in validated
                             for case in validated)
    test_images = cli.raw / two_phase_liver.name / "imagesTs"  # new patients: the source dataset's test images
    cli.run("nnUNetv2_predict", "-i", str(test_images), "-o", str(cli.results / "pred_online"), "-d", "591",
            "-c", "3d_fullres", "-tr", "SynthTumorTrainer_debug", "-f", "0", "-device", "cpu")
    assert len(list((cli.results / "pred_online").glob("*.nii.gz"))) == len(list(test_images.glob("*_0000.nii.gz")))

    # the same models, paid once: a pool, read by a second nnU-Net loader (background workers) in fold 1
    assert nnunet_mm(["synth-pool", "-d", "591", "-c", "3d_fullres", "-n", "3", "-device", "cpu"]) == 0
    pool = models / "pool_3d_fullres"
    assert len(list(pool.glob("pool_*_seg.b2nd"))) == 3 and (pool / "pool.png").is_file()
    cli.add_to_block(name, seed=0, synthesis={"synthesizer": "pool", "probability": 0.5})
    env = dict(cli.env, nnUNet_n_proc_DA="2")
    import subprocess

    done = subprocess.run(["nnUNetv2_train", "591", "3d_fullres", "1", "-tr", "SynthTumorTrainer_debug", "-device",
                           "cpu"], env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = next((run / "fold_1").glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert f"pool synthesizer, pool of 3 patches from {pool}" in log
    assert len(_synthetic_fractions(log)) == 2
    assert nnunet_mm(["predict", "-i", str(test_images), "-o", str(cli.results / "pred_pool"), "-d", "591",
                      "-c", "3d_fullres", "-tr", "SynthTumorTrainer_debug", "-f", "1", "-device", "cpu"]) == 0
    assert list((cli.results / "pred_pool").glob("*.nii.gz"))
