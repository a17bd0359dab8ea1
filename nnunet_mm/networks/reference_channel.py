"""The reference channel of a multi-stream network, stored in its weights.

nnU-Net's predictor rebuilds a network from the plans alone (so with ``reference_channel`` 0) and then loads the
checkpoint's state dict; a network whose output depends on the reference channel therefore keeps it as a buffer
(``reference_index``) and copies it into a Python attribute after every load, so ``forward`` needs no device sync.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class StoredReferenceChannel(nn.Module):
    """Mixin for networks whose ``forward`` returns the reference channel's logits (CMGUNet, CMCUNet)."""

    def init_reference_channel(self, reference_channel: int, num_channels: int) -> None:
        """Register the buffer; call once in ``__init__`` after ``nn.Module.__init__``.

        Raises:
            ValueError: ``reference_channel`` is not one of the ``num_channels`` input channels.
        """
        self._check_reference_channel(reference_channel, num_channels)
        self.num_reference_candidates = num_channels
        self.register_buffer("reference_index", torch.tensor(reference_channel, dtype=torch.long))
        self.reference_channel = reference_channel  # a Python copy of the buffer: no device sync in forward
        self.register_load_state_dict_post_hook(StoredReferenceChannel._sync_reference_channel)

    def set_reference_channel(self, channel: int) -> None:
        """Make ``channel`` the one whose logits ``forward`` returns (stored in the state dict).

        Raises:
            ValueError: ``channel`` is not an input channel.
        """
        self._check_reference_channel(channel, self.num_reference_candidates)
        self.reference_index.fill_(channel)
        self.reference_channel = channel

    @staticmethod
    def _check_reference_channel(channel: int, num_channels: int) -> None:
        if not 0 <= channel < num_channels:
            raise ValueError(f"reference channel {channel} is not one of the {num_channels} input channels.")

    @staticmethod
    def _sync_reference_channel(module: "StoredReferenceChannel", incompatible_keys: Any) -> None:
        module.reference_channel = int(module.reference_index)
