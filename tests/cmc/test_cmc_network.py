"""CMCUNet: self-paired inference, pair training outputs, and gradients of the consistency terms."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_mm.cmc.network import CMCUNet
from nnunet_mm.cmc.losses import cac_loss, csc_loss


def _kwargs(dim: int) -> dict:
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dim == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return dict(n_stages=4, features_per_stage=[8, 16, 16, 24], conv_op=conv, kernel_sizes=3,
                strides=[1, 2, 2, 2], n_conv_per_stage=2, n_conv_per_stage_decoder=1, conv_bias=True,
                norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                nonlin_kwargs={"inplace": False})


@pytest.mark.parametrize("dim,shape", [(2, (32, 32)), (3, (16, 16, 16))])
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_is_the_inference_path_in_nnunet_layout(dim, shape, channels):
    torch.manual_seed(0)
    network = CMCUNet(input_channels=channels, num_classes=3, deep_supervision=True, **_kwargs(dim)).eval()
    x = torch.randn(2, channels, *shape)
    with torch.no_grad():
        outputs = network(x)
        assert [o.shape[1] for o in outputs] == [3, 3, 3] and outputs[0].shape[2:] == x.shape[2:]
        streams = [x, x] if channels == 1 else [x[:, :1], x[:, 1:]]
        torch.testing.assert_close(outputs, network.forward_pair(streams)["outputs"][0])
    network.decoder.deep_supervision = False
    with torch.no_grad():
        assert network(x).shape == (2, 3, *shape)


def test_csc_and_cac_send_gradients_into_the_shared_encoder():
    """The public code's bug (no gradient from the semi-supervised terms) must be impossible here."""
    torch.manual_seed(0)
    network = CMCUNet(input_channels=1, num_classes=3, deep_supervision=False, **_kwargs(3))
    ct, mr = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 1, 16, 16, 16)
    for term in ("csc", "cac"):
        network.zero_grad()
        result = network(streams=[ct, mr])
        if term == "csc":
            loss = csc_loss(*result["bottleneck"])
        else:
            loss = cac_loss(*(torch.softmax(o, 1) for o in result["outputs"]), paired=False)
        loss.backward()
        encoder_grad = sum(p.grad.abs().sum() for p in network.encoder.parameters() if p.grad is not None)
        assert encoder_grad > 0, term


def test_the_bottleneck_fuses_the_partner():
    torch.manual_seed(0)
    network = CMCUNet(input_channels=1, num_classes=2, deep_supervision=False, **_kwargs(2)).eval()
    network.bottleneck.attention.gamma.data.fill_(0.5)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        with_self = network.forward_pair([x, x])["outputs"][0]
        with_other = network.forward_pair([x, torch.randn_like(x)])["outputs"][0]
    assert not torch.allclose(with_self, with_other)


def test_the_reference_channel_travels_in_the_state_dict():
    """nnU-Net's predictor builds the network from the plans (reference 0), then loads the weights."""
    torch.manual_seed(0)
    trained = CMCUNet(input_channels=2, num_classes=3, deep_supervision=False, **_kwargs(2)).eval()
    trained.set_reference_channel(1)
    rebuilt = CMCUNet(input_channels=2, num_classes=3, deep_supervision=False, **_kwargs(2)).eval()
    rebuilt.load_state_dict(trained.state_dict())
    assert rebuilt.reference_channel == 1
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), trained(x))
        assert not torch.allclose(rebuilt(x), trained.forward_pair([x[:, :1], x[:, 1:]])["outputs"][0])


def test_weights_saved_without_a_reference_channel_load_with_channel_0():
    torch.manual_seed(0)
    network = CMCUNet(input_channels=2, num_classes=3, deep_supervision=False, reference_channel=1, **_kwargs(2))
    old_weights = {k: v for k, v in network.state_dict().items() if k != "reference_index"}
    network.load_state_dict(old_weights)
    assert network.reference_channel == 0


def test_a_reference_channel_outside_the_inputs_is_refused():
    with pytest.raises(ValueError, match="reference channel 2 is not one of the 2 input channels"):
        CMCUNet(input_channels=2, num_classes=3, reference_channel=2, **_kwargs(2))
    with pytest.raises(ValueError, match="reference channel 1 is not one of the 1 input channels"):
        CMCUNet(input_channels=1, num_classes=3, **_kwargs(2)).set_reference_channel(1)
