"""CMCUNet: one nnU-Net encoder and decoder shared by all modalities, with the cross-modality bottleneck of CMC
(paper 001) between them.

Built from the plans' ``PlainConvUNet`` arguments. Streams are single-channel inputs that go through the same
encoder; the bottleneck fuses them; the same decoder turns each stream's projected bottleneck (and its own skips)
into logits with deep supervision.

* Single-channel datasets (unpaired CT/MR as in AMOS): two streams. In training, a pair of different cases (any
  modalities); at inference ``forward(x)`` **self-pairs** (x, x), so nnU-Net's predictor needs no partner volume
  (the paper needs one; the trainer self-pairs a share of the training pairs so this mode is in distribution).
* Multi-channel datasets (paired, co-registered or roughly): one stream per channel; ``forward(x)`` returns the
  reference channel's logits.

``forward(x)`` is the inference path; :meth:`forward_pair` returns every stream's pre-attention bottleneck (what the
channel-wise semantic consistency compares) and logits. Under DDP the training step goes through the wrapper's
``forward`` (``forward(streams=[...])``), where gradients are synchronised.

The reference channel is stored as a buffer in the ``state_dict`` (``reference_index``), as in
:class:`~nnunet_mm.cmg.network.CMGUNet`: nnU-Net's predictor rebuilds the network from the plans alone (reference 0)
and then loads the weights, which restore the reference channel it was trained with.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_mm.cmc.bottleneck import CrossModalityBottleneck
from nnunet_mm.networks.layers import ConvSpec, as_tuple
from nnunet_mm.networks.reference_channel import StoredReferenceChannel


class CMCUNet(StoredReferenceChannel):
    """Shared encoder/decoder with a cross-modality bottleneck (see the module docstring)."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: int | Sequence[int],
                 conv_op: type[nn.Module], kernel_sizes: int | Sequence, strides: int | Sequence,
                 n_conv_per_stage: int | Sequence[int], num_classes: int,
                 n_conv_per_stage_decoder: int | Sequence[int], conv_bias: bool = False,
                 norm_op: type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 dropout_op: type[nn.Module] | None = None, dropout_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] | None = None, nonlin_kwargs: dict | None = None,
                 deep_supervision: bool = False, nonlin_first: bool = False, reference_channel: int = 0):
        super().__init__()
        self.input_channels = input_channels
        self.num_streams = max(2, input_channels)
        self.init_reference_channel(reference_channel, input_channels)
        self.encoder = PlainConvEncoder(1, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                        n_conv_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                        dropout_op_kwargs, nonlin, nonlin_kwargs, return_skips=True,
                                        nonlin_first=nonlin_first)
        spec = ConvSpec(conv_op, norm_op, dict(norm_op_kwargs or {}), nonlin, dict(nonlin_kwargs or {}), conv_bias)
        deepest = self.encoder.output_channels[-1]
        kernel = as_tuple(self.encoder.kernel_sizes[-1], spec.dim)
        self.bottleneck = CrossModalityBottleneck(spec, self.num_streams, deepest, kernel)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision,
                                   nonlin_first=nonlin_first)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # weights saved before the reference channel was stored predict with channel 0, as they always did
        state_dict.setdefault(f"{prefix}reference_index", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _streams(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.input_channels == 1:
            return [x, x]
        return [x[:, c:c + 1] for c in range(self.input_channels)]

    def forward(self, x: torch.Tensor | None = None, streams: Sequence[torch.Tensor] | None = None
                ) -> torch.Tensor | list[torch.Tensor] | dict[str, Any]:
        """Logits of ``x`` (self-paired for single-channel data; the reference channel otherwise). With
        ``streams=[...]`` instead, :meth:`forward_pair`'s dict (for a DDP-wrapped training step)."""
        if streams is not None:
            return self.forward_pair(streams)
        index = 0 if self.input_channels == 1 else self.reference_channel
        return self.forward_pair(self._streams(x))["outputs"][index]

    def forward_pair(self, streams: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Run ``num_streams`` single-channel inputs of equal shape.

        Returns:
            ``bottleneck``: per stream the encoder's deepest features before attention (B, C, ...);
            ``outputs``: per stream the decoder's logits (a list, highest resolution first, with deep supervision).
        """
        if len(streams) != self.num_streams:
            raise ValueError(f"CMCUNet was built for {self.num_streams} streams, got {len(streams)}.")
        skips = [self.encoder(s) for s in streams]
        projected = self.bottleneck([s[-1] for s in skips])
        outputs = [self.decoder([*s[:-1], z]) for s, z in zip(skips, projected)]
        return {"bottleneck": [s[-1] for s in skips], "outputs": outputs}

    def compute_conv_feature_map_size(self, input_size: Sequence[int]):
        """Training activations for nnU-Net's planner: encoder and decoder once per stream, plus the bottleneck."""
        import numpy as np

        size = [int(s) for s in input_size]
        for stride in self.encoder.strides:
            size = [s // st for s, st in zip(size, stride)]
        bottleneck = int(np.prod(size)) * self.encoder.output_channels[-1] * (3 + 2 * self.num_streams)
        per_stream = self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)
        return np.int64(per_stream * self.num_streams + bottleneck)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He initialisation of convolutions (``network.apply(...)``), as ``PlainConvUNet.initialize``."""
        InitWeights_He(1e-2)(module)
