"""Label fusion: every method on toy cases with hand-computed answers."""
import numpy as np
import pytest

from nnunet_mm.atlas.fusion import (fused_label, local_similarity_weights, locally_weighted_vote, majority_vote,
                                    staple, weighted_vote)


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.stack([(labels == k).astype(np.float32) for k in range(num_classes)])


# three atlases on a 1×1×6 grid; by hand, the per-voxel majority is [0, 1, 1, 2, 2, 0]
ATLAS_LABELS = np.array([[0, 1, 1, 2, 2, 0], [0, 1, 2, 2, 0, 0], [1, 1, 1, 2, 2, 0]]).reshape(3, 1, 1, 6)
EXPECTED = np.array([0, 1, 1, 2, 2, 0]).reshape(1, 1, 6)


def test_majority_vote_gives_vote_shares_and_the_hand_computed_label():
    probabilities = majority_vote(np.stack([_one_hot(a, 3) for a in ATLAS_LABELS]))
    np.testing.assert_allclose(probabilities[:, 0, 0, 0], [2 / 3, 1 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(probabilities[:, 0, 0, 2], [0, 2 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(fused_label(probabilities), EXPECTED)


def test_fusion_methods_agree_on_the_toy_case():
    atlases = np.stack([_one_hot(a, 3) for a in ATLAS_LABELS])
    same_image = np.stack([np.linspace(0, 1, 6).reshape(1, 1, 6)] * 3)
    for probabilities in (majority_vote(atlases), staple(atlases),
                          locally_weighted_vote(atlases, same_image[0], same_image, sigma_voxels=1.0)):
        np.testing.assert_array_equal(fused_label(probabilities), EXPECTED)
        np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_weighted_vote_follows_the_weights():
    atlases = np.stack([_one_hot(np.full((1, 2, 2), 1), 2), _one_hot(np.zeros((1, 2, 2), int), 2)])
    probabilities = weighted_vote(atlases, np.array([3.0, 1.0]))
    np.testing.assert_allclose(probabilities[1], 0.75, atol=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_vote(atlases, np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="2 atlases"):
        weighted_vote(atlases, np.ones(3))


def test_locally_weighted_vote_trusts_the_atlas_whose_image_matches_the_target():
    x = np.arange(16)
    step = (x >= 8).astype(np.float32)
    target = np.broadcast_to(1.0 - step, (2, 16, 16)).copy()  # inverted contrast: another modality
    atlas_images = np.stack([np.broadcast_to(step, (2, 16, 16)),                       # same edge as the target
                             np.broadcast_to((x >= 4).astype(np.float32), (2, 16, 16))])  # edge 4 voxels off
    atlas_labels = np.stack([np.broadcast_to(step, (2, 16, 16)), np.broadcast_to(x >= 4, (2, 16, 16))]).astype(int)
    weights = local_similarity_weights(target, atlas_images, sigma_voxels=1.5)
    assert weights[0, :, :, 8].mean() > 0.9 and weights[1, :, :, 8].mean() < 0.1
    fused = fused_label(locally_weighted_vote(np.stack([_one_hot(a, 2) for a in atlas_labels]), target,
                                              atlas_images, sigma_voxels=1.5))
    np.testing.assert_array_equal(fused[:, :, 6:10], atlas_labels[0][:, :, 6:10])  # the matching atlas decides
