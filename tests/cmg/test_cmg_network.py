"""CMGUNet and its blocks: shapes, the misregistration robustness of cross-modal guidance, gradients, edge cases."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_mm.cmg.guidance import (CrossModalGuidance, guidance_map, masked_average_prototypes,
                                     region_masks_from_logits)
from nnunet_mm.cmg.network import CMGUNet
from nnunet_mm.cmg.guidance import cross_phase_prototypes
from nnunet_mm.networks.layers import ConvSpec


def _kwargs(dim: int) -> dict:
    if dim == 3:
        return dict(n_stages=4, features_per_stage=[8, 16, 16, 24], conv_op=nn.Conv3d,
                    kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=2,
                    n_conv_per_stage_decoder=1, conv_bias=True, norm_op=nn.InstanceNorm3d,
                    norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                    nonlin_kwargs={"inplace": True})
    return dict(n_stages=4, features_per_stage=[8, 16, 16, 24], conv_op=nn.Conv2d, kernel_sizes=3,
                strides=[1, 2, 2, 2], n_conv_per_stage=2, n_conv_per_stage_decoder=1, conv_bias=True,
                norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                nonlin_kwargs={"inplace": True})


@pytest.mark.parametrize("dim,shape", [(2, (32, 32)), (3, (8, 32, 32))])
@pytest.mark.parametrize("phases", [2, 4])
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_forward_returns_reference_logits_in_nnunet_layout(dim, shape, phases, deep_supervision):
    torch.manual_seed(0)
    network = CMGUNet(input_channels=phases, num_classes=3, deep_supervision=deep_supervision, **_kwargs(dim))
    x = torch.randn(2, phases, *shape)
    output = network(x)
    if deep_supervision:
        assert isinstance(output, list) and len(output) == 3
        assert output[0].shape == (2, 3, *shape)
        assert [o.shape[2:] for o in output[1:]] == [torch.Size([s // 2 if i or dim == 2 else s
                                                                 for i, s in enumerate(shape)]),
                                                     torch.Size([s // 4 if i or dim == 2 else s // 2
                                                                 for i, s in enumerate(shape)])]
    else:
        assert isinstance(output, torch.Tensor) and output.shape == (2, 3, *shape)
    train = network.forward_train(x)
    assert len(train["outputs"]) == phases and len(train["side_logits"]) == phases
    assert len(train["side_logits"][0]) == network.guidance_levels == 2
    network.eval()
    with torch.no_grad():  # the inference path equals the reference output of the training path
        inference = network(x)
        full = network.forward_train(x)["outputs"][0]
    torch.testing.assert_close(inference if deep_supervision else [inference], full)


def test_guidance_of_a_phase_ignores_where_the_other_phase_is():
    """Prototypes are pooled over space: shifting phase B (features and its mask together) leaves phase A's
    guidance map unchanged — the property that makes CMG robust to misregistration."""
    torch.manual_seed(0)
    spec = ConvSpec(nn.Conv3d, nn.InstanceNorm3d, {"affine": True}, nn.LeakyReLU, {})
    block = CrossModalGuidance(spec, num_phases=2, merged_channels=16, skip_channels=8, channels=8, num_classes=2,
                               kernel_size=(3, 3, 3)).eval()
    merged = [torch.randn(1, 16, 8, 16, 16) for _ in range(2)]
    skips = [torch.randn(1, 8, 8, 16, 16) for _ in range(2)]
    mask = torch.zeros(1, 1, 8, 16, 16)
    mask[..., 2:5, 4:9, 5:10] = 1
    reference = block(merged, skips, [mask, mask])["guidance"][0]
    shifted = block([merged[0], torch.roll(merged[1], (2, 5), (3, 4))],
                    [skips[0], torch.roll(skips[1], (2, 5), (3, 4))],
                    [mask, torch.roll(mask, (2, 5), (3, 4))])["guidance"][0]
    torch.testing.assert_close(shifted, reference)
    # while a voxel-wise comparison of the two phases changes completely
    voxelwise = torch.cosine_similarity(skips[0], skips[1], dim=1)
    voxelwise_shifted = torch.cosine_similarity(skips[0], torch.roll(skips[1], (2, 5), (3, 4)), dim=1)
    assert (voxelwise - voxelwise_shifted).abs().mean() > 0.1


def test_network_guidance_is_nearly_unchanged_when_phase_b_moves():
    """End to end (no fusion, teacher-forced masks): phase A's guidance maps barely change when phase B's image
    and mask are translated."""
    torch.manual_seed(0)
    network = CMGUNet(input_channels=2, num_classes=2, deep_supervision=False, fusion_levels=0,
                      **_kwargs(2)).eval()
    x = torch.randn(1, 2, 64, 64)
    label = torch.zeros(1, 1, 64, 64)
    label[..., 20:36, 18:38] = 1
    shift = (8, -8)  # multiples of the deepest stride, so the features move by whole voxels at every level
    moved = x.clone()
    moved[:, 1] = torch.roll(x[:, 1], shift, (1, 2))
    moved_label = torch.roll(label, shift, (2, 3))
    shapes = network.guidance_level_shapes((64, 64))

    def masks(lab):
        return [nn.functional.adaptive_max_pool2d(lab, s) for s in shapes]

    with torch.no_grad():
        before = network.forward_train(x, [masks(label), masks(label)])["guidance"][0]
        after = network.forward_train(moved, [masks(label), masks(moved_label)])["guidance"][0]
    for b, a in zip(before, after):
        assert (a - b).abs().mean() < 0.1 * b.abs().mean()


def test_gradients_reach_every_encoder_and_decoder():
    torch.manual_seed(0)
    network = CMGUNet(input_channels=3, num_classes=3, deep_supervision=True, **_kwargs(3))
    result = network.forward_train(torch.randn(2, 3, 8, 32, 32))
    loss = sum(o.square().mean() for per_phase in result["outputs"] for o in per_phase) + \
        sum(z.square().mean() for per_phase in result["side_logits"] for z in per_phase)
    loss.backward()
    for name, module in [*(("encoder", e) for e in network.encoders), *(("decoder", d) for d in network.decoders),
                         ("fusion", network.fusions), ("guidance", network.guidance)]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_empty_masks_and_zero_prototypes_give_no_nan():
    embedding = torch.randn(2, 4, 5, 6)
    prototypes, present = masked_average_prototypes(embedding, torch.zeros(2, 1, 5, 6))
    assert not present.any() and torch.equal(prototypes, torch.zeros(2, 1, 4))
    others = cross_phase_prototypes([prototypes, prototypes], [present, present])
    maps = guidance_map(embedding, others[0])
    assert torch.isfinite(maps).all() and torch.equal(maps, torch.zeros_like(maps))

    network = CMGUNet(input_channels=2, num_classes=3, deep_supervision=True, **_kwargs(2))
    shapes = network.guidance_level_shapes((32, 32))
    empty = [torch.zeros(2, 2, *s) for s in shapes]
    result = network.forward_train(torch.randn(2, 2, 32, 32), [empty, empty])
    assert all(torch.isfinite(o).all() for per in result["outputs"] for o in per)
    result["outputs"][0][0].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)


def test_reference_channel_travels_with_the_weights():
    trained = CMGUNet(input_channels=2, num_classes=2, **_kwargs(2))
    trained.set_reference_channel(1)
    rebuilt = CMGUNet(input_channels=2, num_classes=2, **_kwargs(2))  # what nnU-Net's predictor builds
    rebuilt.load_state_dict(trained.state_dict())
    assert rebuilt.reference_channel == 1
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), trained.eval()(x))
        assert not torch.allclose(rebuilt(x), rebuilt.forward_train(x)["outputs"][0][0])


def test_feature_map_estimate_grows_with_phases():
    two = CMGUNet(input_channels=2, num_classes=3, **_kwargs(3)).compute_conv_feature_map_size((8, 32, 32))
    four = CMGUNet(input_channels=4, num_classes=3, **_kwargs(3)).compute_conv_feature_map_size((8, 32, 32))
    assert 1.5 * two < four < 2.5 * two


def _guidance_block(num_phases: int) -> tuple[CrossModalGuidance, list, list]:
    torch.manual_seed(0)
    spec = ConvSpec(nn.Conv2d, nn.InstanceNorm2d, {"affine": True}, nn.LeakyReLU, {})
    block = CrossModalGuidance(spec, num_phases=num_phases, merged_channels=16, skip_channels=8, channels=8,
                               num_classes=2, kernel_size=(3, 3)).eval()
    merged = [torch.randn(2, 16, 16, 16) for _ in range(num_phases)]
    skips = [torch.randn(2, 8, 16, 16) + p for p in range(num_phases)]  # distinct content per phase
    return block, merged, skips


@pytest.mark.parametrize("num_phases", [2, 3])
def test_each_phase_is_guided_by_the_other_phases_prototypes_not_its_own(num_phases):
    """S_p = cos(e_p, mean of the *other* phases' prototypes): the paper's cross-modal rule."""
    block, merged, skips = _guidance_block(num_phases)
    masks = []
    for p in range(num_phases):
        mask = torch.zeros(2, 1, 16, 16)
        mask[:, :, 2 + p:8 + p, 3:9 + p] = 1
        masks.append(mask)
    with torch.no_grad():
        result = block(merged, skips, masks)
        embeddings = [embed(s) for embed, s in zip(block.embed, skips)]
        prototypes = [masked_average_prototypes(e, m)[0] for e, m in zip(embeddings, masks)]
    for p in range(num_phases):
        others = torch.stack([prototypes[q] for q in range(num_phases) if q != p]).mean(0)
        torch.testing.assert_close(result["guidance"][p], guidance_map(embeddings[p], others))
        own = guidance_map(embeddings[p], prototypes[p])
        assert (result["guidance"][p] - own).abs().max() > 1e-2  # the phase's own prototype gives another map


def test_scheduled_sampling_takes_prototypes_from_the_side_prediction_for_the_chosen_samples():
    block, merged, skips = _guidance_block(2)
    given = [torch.zeros(2, 1, 16, 16) for _ in range(2)]
    for mask in given:
        mask[:, :, 4:7, 5:9] = 1
    with torch.no_grad():
        result = block(merged, skips, given, use_prediction=torch.tensor([True, False]))
    for p in range(2):
        predicted = region_masks_from_logits(result["side_logits"][p])
        assert not torch.equal(predicted[0], given[p][0])  # the untrained head does not predict the square
        torch.testing.assert_close(result["masks"][p][0], predicted[0])  # sample 0: its own prediction
        torch.testing.assert_close(result["masks"][p][1], given[p][1])  # sample 1: the ground truth


def test_guidance_off_passes_features_unmodulated():
    torch.manual_seed(0)
    network = CMGUNet(input_channels=2, num_classes=3, deep_supervision=False, guidance=False, **_kwargs(2))
    merged = [torch.randn(1, 32, 8, 8) for _ in range(2)]
    skips = [torch.randn(1, 16, 8, 8) for _ in range(2)]
    block = network.guidance[0]
    result = block(merged, skips, None)
    expected = [refine(reduce(m)) for m, reduce, refine in zip(merged, block.reduce, block.refine)]
    torch.testing.assert_close(result["guided"], expected)
    assert network(torch.randn(1, 2, 32, 32)).shape == (1, 3, 32, 32)
