"""The shared EMA helper: PyTorch's EMA step on a plain copy of the network."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from nnunet_mm.networks.ema import ema_update, frozen_copy


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def test_frozen_copy_keeps_the_state_dict_keys_and_takes_no_gradients():
    model = _net()
    average = frozen_copy(model)
    assert list(average.state_dict()) == list(model.state_dict())
    assert not average.training and not any(p.requires_grad for p in average.parameters())


def test_ema_update_matches_torch_averaged_model_with_its_ema_function():
    model = _net()
    average = frozen_copy(model)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))  # first call copies
    reference.update_parameters(model)
    for step in range(3):
        with torch.no_grad():
            model[0].weight.add_(step + 1.0)
            model[1].running_mean.add_(1.0)
        ema_update(average, model, 0.9)
        reference.update_parameters(model)
    for (name, ours), theirs in zip(average.state_dict().items(), reference.module.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_ema_update_refuses_a_decay_outside_zero_one(decay):
    model = _net()
    with pytest.raises(ValueError, match="EMA decay must be in"):
        ema_update(frozen_copy(model), model, decay)
