"""Tumour mask geometry: inside the allowed region, physical sizes per class, counts, seeded; the removal mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnunet_mm.synthesis.masks import TumourMaskSettings, TumourSizeClass, removal_mask, sample_tumour_masks


def _liver(batch: int, shape=(24, 64, 64)) -> torch.Tensor:
    """A box-shaped 'liver' in every sample but the last, which has none."""
    region = torch.zeros(batch, 1, *shape, dtype=torch.bool)
    region[:-1, :, 2:-2, 6:-6, 6:-6] = True
    return region


def _one_class(radius_mm: float, count=(1, 1), elastic=(0.0, 0.0)) -> TumourMaskSettings:
    return TumourMaskSettings((TumourSizeClass("only", radius_mm, count, elastic),))


def test_masks_lie_inside_the_region_and_skip_samples_without_liver():
    region = _liver(4)
    masks = sample_tumour_masks(region, (3.0, 1.5, 1.5), TumourMaskSettings(), torch.Generator().manual_seed(1))
    assert masks.shape == region.shape and masks.dtype == torch.bool
    assert not (masks & ~region).any()
    assert masks[:-1].flatten(1).any(1).all()  # every sample with liver got a tumour
    assert not masks[-1].any()


def test_tumour_volume_matches_the_size_class_in_mm():
    """Without elastic deformation and far from the region's edge, a tumour is an ellipsoid with semi-axes in
    [0.75 r, 1.25 r]: its volume in mm³ lies between those of the extreme spheres, at any spacing."""
    radius = 6.0
    for spacing in ((4.0, 2.0, 2.0), (2.0, 1.0, 1.0)):
        shape = tuple(int(48 / s) for s in spacing)
        region = torch.ones(3, 1, *shape, dtype=torch.bool)
        region[:, :, :1] = False  # erosion keeps centres at least one voxel from the border
        generator = torch.Generator().manual_seed(2)
        volumes = []
        for _ in range(4):
            masks = sample_tumour_masks(region, spacing, _one_class(radius), generator)
            volumes += (masks.flatten(1).sum(1).float() * float(np.prod(spacing))).tolist()
        sphere = 4 / 3 * np.pi * radius ** 3
        clipped_floor = sphere * 0.75 ** 3 / 8  # a centre in a corner of the volume keeps at least an octant
        assert all(clipped_floor * 0.8 <= v <= sphere * 1.25 ** 3 * 1.1 for v in volumes), volumes
        assert np.median(volumes) > sphere * 0.75 ** 3 * 0.6


def test_count_range_gives_that_many_separate_tumours():
    region = torch.zeros(1, 1, 100, 100, dtype=torch.bool)
    region[:, :, 5:95, 5:95] = True
    counts = set()
    generator = torch.Generator().manual_seed(3)
    for _ in range(12):
        masks = sample_tumour_masks(region, (1.0, 1.0), _one_class(2.0, count=(1, 3)), generator)
        counts.add(ndimage.label(masks[0, 0].numpy())[1])
    assert counts <= {1, 2, 3} and len(counts) >= 2


def test_elastic_deformation_changes_the_shape_but_not_the_scale():
    region = torch.ones(6, 1, 96, 96, dtype=torch.bool)
    rigid = sample_tumour_masks(region, (1.0, 1.0), _one_class(12.0), torch.Generator().manual_seed(4))
    deformed = sample_tumour_masks(region, (1.0, 1.0), _one_class(12.0, elastic=(4.0, 4.0)),
                                   torch.Generator().manual_seed(4))
    assert not torch.equal(rigid, deformed)
    ratio = deformed.flatten(1).sum(1).float() / rigid.flatten(1).sum(1).float()
    assert ((ratio > 0.5) & (ratio < 2.0)).all()


def test_same_seed_same_masks_and_class_probabilities_select_the_class():
    region = _liver(3)
    settings = TumourMaskSettings((TumourSizeClass("tiny", 2.0, (1, 1), (0, 0)),
                                   TumourSizeClass("large", 20.0, (1, 1), (0, 0))), class_probabilities=(0.0, 1.0))
    first = sample_tumour_masks(region, (3.0, 1.5, 1.5), settings, torch.Generator().manual_seed(5))
    second = sample_tumour_masks(region, (3.0, 1.5, 1.5), settings, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    tiny_volume_voxels = 4 / 3 * np.pi * 2.5 ** 3 / (3 * 1.5 * 1.5)
    assert (first[:-1].flatten(1).sum(1) > 5 * tiny_volume_voxels).all()  # only the large class was drawn


def test_bad_region_and_spacing_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="bool tensor"):
        sample_tumour_masks(torch.ones(1, 1, 8, 8), (1.0, 1.0), TumourMaskSettings(), torch.Generator())
    with pytest.raises(ValueError, match="spacing_mm must hold 3"):
        sample_tumour_masks(_liver(2), (1.0, 1.0), TumourMaskSettings(), torch.Generator())
    with pytest.raises(ValueError, match="class_probabilities"):
        TumourMaskSettings(class_probabilities=(1.0, 0.0))


def test_removal_mask_closes_gaps_of_up_to_four_voxels_then_adds_one_voxel_in_plane():
    tumour = np.zeros((3, 20, 20), bool)
    tumour[1, 10, 5] = tumour[1, 10, 9] = True  # gap of 3 voxels: closed by the 5×5 closing (up to 4 are)
    tumour[1, 3, 3] = True
    mask = removal_mask(tumour)
    assert mask[1, 10, 5:10].all()  # the gap is filled
    assert mask[1, 9:12, 4:11].all() and not mask[1, 8, 7] and not mask[1, 12, 7]  # then one voxel around
    assert mask[1, 2:5, 2:5].all() and mask[1, 2:5, 2:5].sum() == 9  # an isolated voxel → its 3×3 neighbourhood
    assert not mask[0].any() and not mask[2].any()  # in-plane only: neighbouring slices untouched
    assert (mask | ~tumour).all()
    wide = np.zeros((20, 20), bool)
    wide[10, 5] = wide[10, 11] = True  # gap of 5 voxels: stays open
    assert not removal_mask(wide)[10, 8]


def test_removal_mask_refuses_wrong_shapes_and_sizes():
    with pytest.raises(ValueError, match="2D or 3D"):
        removal_mask(np.zeros(5, bool))
    with pytest.raises(ValueError, match="closing_size_voxels must be an odd"):
        removal_mask(np.zeros((5, 5), bool), closing_size_voxels=4)
