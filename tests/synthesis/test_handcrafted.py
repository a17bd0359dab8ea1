"""Handcrafted synthesizer and the real-tumour statistics it is fitted on: per-phase contrast, texture, the contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_mm.phantom import HU_BY_TISSUE, PHASE_NAMES, make_case
from nnunet_mm.synthesis.base import TumorSynthesizer, blending_rim
from nnunet_mm.synthesis.handcrafted import HandcraftedSynthesizer
from nnunet_mm.synthesis.masks import TumourMaskSettings, TumourSizeClass, sample_tumour_masks
from nnunet_mm.synthesis.statistics import TumourContrastStatistics, fit_tumour_statistics, lesion_statistics

PHASES = ("pv", "art", "del", "nc")


def _statistics(contrast, tumour_std=None, liver_std=None, phases=("pv", "art")) -> TumourContrastStatistics:
    contrast = np.atleast_2d(np.asarray(contrast, float))
    zeros = np.zeros_like(contrast)
    return TumourContrastStatistics(tuple(phases), contrast,
                                    zeros if tumour_std is None else np.atleast_2d(tumour_std),
                                    zeros if liver_std is None else np.atleast_2d(liver_std),
                                    tuple(f"case{i}" for i in range(len(contrast))))


def _disc_mask(batch=2, size=48, radius=8) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((y - size / 2) ** 2 + (x - size / 2) ** 2) <= radius ** 2
    return disc[None, None].expand(batch, 1, size, size).clone()


def _phantom_rows(seed: int) -> tuple[list[dict], tuple[str, ...]]:
    case = make_case(seed, shape_zyx=(24, 64, 64), misregistration=False)
    images = np.stack([case.images[p] for p in case.phase_names]).astype(np.float32)
    return lesion_statistics(images, case.label, 1, 2), case.lesion_kinds


def test_fitted_contrast_recovers_each_lesion_kinds_enhancement_pattern():
    """Phantom lesions have known HU per phase: an HCC enhances in the arterial phase and washes out in the portal
    phase, a cyst is dark everywhere. The fitted rows reproduce the kind's tumour-minus-liver contrast per phase."""
    order = [PHASE_NAMES.index(p) for p in PHASES]
    seen = set()
    for seed in (1, 2):
        rows, kinds = _phantom_rows(seed)
        assert rows
        for row in rows:
            expected = {kind: np.array(HU_BY_TISSUE[kind])[order] - np.array(HU_BY_TISSUE["liver"])[order]
                        for kind in set(kinds)}
            errors = {kind: np.abs(np.array(row["contrast"]) - e) / (np.abs(e) + 10) for kind, e in expected.items()}
            best = min(errors, key=lambda k: errors[k].max())
            assert errors[best].max() < 0.3, (row, expected)
            seen.add(best)
    assert "hcc" in seen  # arterial enhancement present in the fit
    hcc_rows = [r for r in _phantom_rows(2)[0]]
    assert any(r["contrast"][1] > 30 and r["contrast"][0] < 0 for r in hcc_rows)


def test_synthesizer_applies_each_phases_contrast_inside_the_mask_and_nothing_beyond_the_rim():
    synthesizer = HandcraftedSynthesizer(_statistics([[-1.0, 1.5]]), (1.0, 1.0), contrast_jitter=0.2)
    assert isinstance(synthesizer, TumorSynthesizer)
    images = torch.randn(2, 2, 48, 48, generator=torch.Generator().manual_seed(0)) * 0.1
    mask = _disc_mask()
    out = synthesizer(images, mask, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    outside = ~blending_rim(mask).expand_as(images)
    assert torch.equal(out[outside], images[outside])
    core = (mask & ~blending_rim(~mask, 2)).expand_as(images)  # 2 voxels inside the edge: full weight
    change = (out - images)[core].view(2, 2, -1).mean(-1)  # (sample, phase)
    assert ((change[:, 0] < -0.75) & (change[:, 0] > -1.25)).all()  # pv: -1.0 × jitter in [0.8, 1.2]
    assert ((change[:, 1] > 1.1) & (change[:, 1] < 1.85)).all()
    ratio = change[:, 1] / change[:, 0]
    assert torch.allclose(ratio, torch.full_like(ratio, -1.5), atol=1e-3)  # one jitter for all phases of a sample


def test_texture_adds_the_extra_tumour_heterogeneity_and_is_shared_by_the_phases():
    statistics = _statistics([[0.0, 0.0]], tumour_std=[[0.5, 1.0]], liver_std=[[0.3, 0.6]])
    synthesizer = HandcraftedSynthesizer(statistics, (1.0, 1.0), texture_sigma_mm=(2.0, 2.0))
    images = torch.zeros(1, 2, 64, 64)
    mask = _disc_mask(1, 64, 20)
    out = synthesizer(images, mask, torch.Generator().manual_seed(2))
    core = (mask & ~blending_rim(~mask, 2))[0, 0]
    pv, art = out[0, 0][core], out[0, 1][core]
    assert 0.15 < pv.std() < 0.65  # sqrt(0.5² - 0.3²) = 0.4
    assert torch.corrcoef(torch.stack((pv, art)))[0, 1] > 0.99  # the same texture field, scaled per phase
    assert art.std() / pv.std() == pytest.approx(2.0, rel=1e-3)  # sqrt(1 - 0.36) / 0.4


def test_synthetic_tumours_reproduce_the_fitted_per_phase_statistics():
    """Fit on real phantom tumours, paint synthetic tumours into another phantom's healthy liver, measure them with
    the same estimator: the per-phase median contrast comes back."""
    cases = []
    for seed in (1, 2, 3):
        case = make_case(seed, shape_zyx=(24, 64, 64), misregistration=False)
        cases.append((f"c{seed}", np.stack([case.images[p] for p in PHASES]).astype(np.float32), case.label))
    statistics = fit_tumour_statistics(cases, PHASES, 1, 2)
    target = make_case(7, shape_zyx=(24, 64, 64), misregistration=False)
    images = torch.from_numpy(np.stack([target.images[p] for p in PHASES]).astype(np.float32))[None]
    liver = torch.from_numpy(target.label == 1)[None, None]
    healthy = np.where(target.label == 2, 0, target.label)  # measure the synthetic tumours only
    synthesizer = HandcraftedSynthesizer(statistics, (3.0, 1.5, 1.5), contrast_jitter=0.0)
    generator = torch.Generator().manual_seed(3)
    measured = []
    for _ in range(12):
        mask = sample_tumour_masks(liver, (3.0, 1.5, 1.5),
                                   TumourMaskSettings((TumourSizeClass("m", 12.0, (1, 1), (0.5, 1.0)),)), generator)
        out = synthesizer(images, mask, generator)[0].numpy()
        label = np.where(mask[0, 0].numpy(), 2, healthy)
        measured += [r["contrast"] for r in lesion_statistics(out, label, 1, 2)]
    fitted_median = np.median(statistics.contrast, 0)
    measured_median = np.median(np.array(measured), 0)
    assert len(measured) >= 8
    # the edge blur lowers the contrast of the eroded core of thin (3-slice) tumours a little
    assert np.all(np.abs(measured_median - fitted_median) < 0.3 * np.abs(fitted_median) + 8), \
        (measured_median, fitted_median)


def test_wrong_phase_count_and_broken_inputs_are_refused():
    synthesizer = HandcraftedSynthesizer(_statistics([[-1.0, 1.0]]), (1.0, 1.0))
    with pytest.raises(ValueError, match="3 channels but the tumour statistics describe 2 phases"):
        synthesizer(torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16, dtype=torch.bool), torch.Generator())
    with pytest.raises(ValueError, match="tumour_mask must be a bool tensor of shape"):
        synthesizer(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16, dtype=torch.bool), torch.Generator())


def test_statistics_round_trip_and_bad_file_names_the_file(tmp_path):
    statistics = _statistics([[-1.0, 1.0], [0.5, -0.5]], tumour_std=[[1, 1], [2, 2]], liver_std=[[0.5, 0.5]] * 2)
    path = statistics.save(tmp_path / "sub" / "stats.json")
    loaded = TumourContrastStatistics.load(path)
    assert np.allclose(loaded.contrast, statistics.contrast) and loaded.phase_names == ("pv", "art")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json: not a valid tumour contrast statistics file"):
        TumourContrastStatistics.load(broken)
    with pytest.raises(FileNotFoundError, match="nnunet_mm synth-stats"):
        TumourContrastStatistics.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="no tumour"):
        fit_tumour_statistics([("a", np.zeros((2, 8, 8), np.float32), np.ones((8, 8), int))], ("pv", "art"), 1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_synthesizer_runs_on_the_gpu():
    device = torch.device("cuda")
    synthesizer = HandcraftedSynthesizer(_statistics([[-1.0, 1.5]]), (1.0, 1.0, 1.0))
    region = torch.ones(2, 1, 32, 64, 64, dtype=torch.bool, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    mask = sample_tumour_masks(region, (1.0, 1.0, 1.0), TumourMaskSettings(), generator)
    images = torch.zeros(2, 2, 32, 64, 64, device=device)
    out = synthesizer(images, mask, generator)
    assert out.device.type == "cuda" and (out[:, 1][mask[:, 0]] > 0).float().mean() > 0.9
