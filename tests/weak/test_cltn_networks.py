"""CLTN generator and discriminators: shapes, the attention mask, complementary fusion and the composite."""
import pytest
import torch

from nnunet_mm.weak.cltn_networks import CLTNDiscriminator, CLTNGenerator, InstanceLayerNorm


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 48)])
def test_generator_outputs_have_the_documented_shapes(channels, size):
    generator = CLTNGenerator(channels, base_channels=8, num_res_blocks=2)
    x = torch.rand(2, channels, size, size) * 2 - 1
    out = generator(x)
    for image in (out.translation, out.composite, out.reconstruction):
        assert image.shape == x.shape
        assert image.abs().max() <= 1.0
    assert out.attention_mask.shape == (2, 1, size, size)
    assert out.cam_logit.shape == (2, 2)
    assert out.heatmap.shape == (2, 1, size // 4, size // 4)


def test_attention_mask_is_in_unit_interval_and_composite_mixes_translation_and_input():
    torch.manual_seed(0)
    generator = CLTNGenerator(3, base_channels=8, num_res_blocks=1)
    with torch.no_grad():
        generator.attention.bias.fill_(3.0)  # push the mask away from 0.5 so both ends are exercised
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = generator(x)
    mask = out.attention_mask
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    expected = out.translation * mask + x * (1 - mask)
    torch.testing.assert_close(out.composite, expected)


def test_attention_mask_receives_gradients_from_the_composite():
    generator = CLTNGenerator(3, base_channels=8, num_res_blocks=1)
    generator(torch.rand(1, 3, 32, 32)).composite.sum().backward()
    assert generator.attention.weight.grad is not None and generator.attention.weight.grad.abs().sum() > 0


def test_clip_rho_keeps_instance_layer_norm_weights_in_unit_interval():
    generator = CLTNGenerator(3, base_channels=8, num_res_blocks=1)
    norms = [m for m in generator.modules() if isinstance(m, InstanceLayerNorm)]
    with torch.no_grad():
        norms[0].rho.fill_(1.7)
        norms[-1].rho.fill_(-0.3)
    generator.clip_rho()
    assert norms[0].rho.max() == 1.0 and norms[-1].rho.min() == 0.0


@pytest.mark.parametrize("size,layers,patch", [(32, 7, 2), (64, 5, 6), (256, 7, 6), (256, 5, 30)])
def test_discriminator_gives_patch_and_cam_logits(size, layers, patch):
    discriminator = CLTNDiscriminator(3, size, layers, base_channels=4)
    patch_logits, cam_logits = discriminator(torch.rand(2, 3, size, size))
    assert patch_logits.shape == (2, 1, patch, patch)
    assert cam_logits.shape == (2, 2)
