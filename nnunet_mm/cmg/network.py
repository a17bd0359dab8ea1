"""CMGUNet: one encoder per phase, Multi-Scale Fusion at the deepest encoder levels, one decoder per phase with
Cross-Modal Guidance at the deepest decoder levels, deep supervision on the reference phase (paper 000, in
nnU-Net's dynamic-architecture form).

Built from the same keyword arguments as ``PlainConvUNet`` (the plans' ``arch_kwargs``), so any nnU-Net
configuration (2D or 3D, any stage/kernel/stride list) works. Input channels are the phases; channel
``reference_channel`` is the one the label belongs to.

* ``forward(x)`` is the inference path nnU-Net's predictor calls: the reference phase's logits (a list, highest
  resolution first, with deep supervision; one tensor without). Non-reference decoders run only through the
  guidance levels, where their prototypes are needed; prototypes come from each phase's own side prediction.
* :meth:`forward_train` additionally returns every phase's outputs, side logits and guidance maps, and takes
  ground-truth region masks for the prototypes (teacher forcing), per sample. Under DDP the training step must go
  through the DDP wrapper's ``forward`` (that is where gradients get synchronised), so ``forward(x,
  training_outputs=True, ...)`` routes to :meth:`forward_train`; plain ``forward(x)`` is unaffected.

``guidance=False`` builds the same network with the guidance modulation switched off (side heads and the guided
branch stay, ``g`` passes unmodulated): the ablation that shows what the prototypes add.

The reference channel is stored as a buffer in the ``state_dict``, so a checkpoint rebuilt by nnU-Net's predictor
(which only knows the plans) predicts with the reference phase it was trained on.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import get_matching_convtransp
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_mm.cmg.guidance import CrossModalGuidance
from nnunet_mm.networks.layers import ConvSpec, as_tuple
from nnunet_mm.networks.reference_channel import StoredReferenceChannel
from nnunet_mm.cmg.fusion import MultiScaleFusion


class PhaseDecoder(nn.Module):
    """A U-Net decoder for one phase; levels listed deepest first. Levels in ``guided_levels`` take an extra
    ``channels`` of guided features into the next upsampling."""

    def __init__(self, encoder: PlainConvEncoder, num_classes: int, n_conv_per_stage: Sequence[int],
                 guided_levels: int, spec: ConvSpec, dropout_op: Any, dropout_op_kwargs: Any, nonlin_first: bool,
                 deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        transpconv = get_matching_convtransp(conv_op=encoder.conv_op)
        channels, strides = encoder.output_channels, encoder.strides
        self.transpconvs, self.stages, self.seg_layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in range(len(channels) - 1):
            below, skip = channels[-(level + 1)], channels[-(level + 2)]
            if 0 < level <= guided_levels:
                below *= 2  # the level below concatenated its guided features
            self.transpconvs.append(transpconv(below, skip, strides[-(level + 1)], strides[-(level + 1)],
                                               bias=spec.conv_bias))
            self.stages.append(StackedConvBlocks(
                n_conv_per_stage[level], encoder.conv_op, 2 * skip, skip, encoder.kernel_sizes[-(level + 2)], 1,
                spec.conv_bias, spec.norm_op, spec.norm_op_kwargs, dropout_op, dropout_op_kwargs, spec.nonlin,
                spec.nonlin_kwargs, nonlin_first))
            self.seg_layers.append(encoder.conv_op(skip, num_classes, 1, 1, 0, bias=True))

    @property
    def num_levels(self) -> int:
        return len(self.stages)


class CMGUNet(StoredReferenceChannel):
    """Cross-modal guidance U-Net for ``input_channels`` ≥ 2 phases (see the module docstring)."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: int | Sequence[int],
                 conv_op: type[nn.Module], kernel_sizes: int | Sequence, strides: int | Sequence,
                 n_conv_per_stage: int | Sequence[int], num_classes: int,
                 n_conv_per_stage_decoder: int | Sequence[int], conv_bias: bool = False,
                 norm_op: type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 dropout_op: type[nn.Module] | None = None, dropout_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] | None = None, nonlin_kwargs: dict | None = None,
                 deep_supervision: bool = False, nonlin_first: bool = False, reference_channel: int = 0,
                 share_encoders: bool = False, fusion_levels: int = 3, guidance_levels: int = 2,
                 guidance: bool = True):
        super().__init__()
        if input_channels < 2:
            raise ValueError(f"CMGUNet needs at least 2 input channels (phases), got {input_channels}; use "
                             f"MultiModalTrainer for single-channel data.")
        if n_stages < 3:
            raise ValueError(f"CMGUNet needs at least 3 stages, got {n_stages}.")
        features = [features_per_stage] * n_stages if isinstance(features_per_stage, int) else list(features_per_stage)
        n_conv = [n_conv_per_stage] * n_stages if isinstance(n_conv_per_stage, int) else list(n_conv_per_stage)
        n_conv_dec = ([n_conv_per_stage_decoder] * (n_stages - 1) if isinstance(n_conv_per_stage_decoder, int)
                      else list(n_conv_per_stage_decoder))
        self.num_phases, self.num_classes = input_channels, num_classes
        self.init_reference_channel(reference_channel, input_channels)
        self.fusion_levels = min(fusion_levels, n_stages - 1)  # never on the full-resolution stage
        self.guidance_levels = min(guidance_levels, n_stages - 2)  # the top level stays a plain decoder level
        spec = ConvSpec(conv_op, norm_op, dict(norm_op_kwargs or {}), nonlin, dict(nonlin_kwargs or {}), conv_bias)

        def make_encoder() -> PlainConvEncoder:
            return PlainConvEncoder(1, n_stages, features, conv_op, kernel_sizes, strides, n_conv, conv_bias,
                                    norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                                    return_skips=True, nonlin_first=nonlin_first)

        self.encoders = nn.ModuleList([make_encoder()] if share_encoders else
                                      [make_encoder() for _ in range(input_channels)])
        encoder = self.encoders[0]
        kernels = [as_tuple(k, spec.dim) for k in encoder.kernel_sizes]
        self.fusion_stages = list(range(n_stages - self.fusion_levels, n_stages))
        self.fusions = nn.ModuleList()
        for i, stage in enumerate(self.fusion_stages):
            previous = None if i == 0 else features[stage - 1]
            self.fusions.append(MultiScaleFusion(spec, input_channels, features[stage], kernels[stage],
                                                 previous_channels=previous,
                                                 previous_stride=None if i == 0 else encoder.strides[stage]))
        self.decoders = nn.ModuleList(
            PhaseDecoder(encoder, num_classes, n_conv_dec, self.guidance_levels, spec, dropout_op, dropout_op_kwargs,
                         nonlin_first, deep_supervision) for _ in range(input_channels))
        self.guidance = nn.ModuleList()
        for level in range(self.guidance_levels):
            skip = features[-(level + 2)]
            self.guidance.append(CrossModalGuidance(spec, input_channels, 2 * skip, skip, skip, num_classes,
                                                    kernels[-(level + 2)], modulate=guidance))

    def set_reference_channel(self, channel: int) -> None:
        """Make ``channel`` the phase whose logits :meth:`forward` returns (stored in the state_dict), keeping the
        deep-supervision setting (nnU-Net toggles it on ``self.decoder``, which is the reference phase's)."""
        deep_supervision = self.decoder.deep_supervision
        super().set_reference_channel(channel)
        self.decoder.deep_supervision = deep_supervision

    # nnU-Net toggles deep supervision through ``network.decoder.deep_supervision``
    @property
    def decoder(self) -> PhaseDecoder:
        return self.decoders[self.reference_channel]

    def _encoder(self, phase: int) -> PlainConvEncoder:
        return self.encoders[0] if len(self.encoders) == 1 else self.encoders[phase]

    def encode(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per phase, the skips of every stage (MSF applied at the fusion stages)."""
        current = [x[:, p:p + 1] for p in range(self.num_phases)]
        skips: list[list[torch.Tensor]] = [[] for _ in range(self.num_phases)]
        fusion = None
        for stage in range(len(self._encoder(0).stages)):
            current = [self._encoder(p).stages[stage](current[p]) for p in range(self.num_phases)]
            if stage in self.fusion_stages:
                current, fusion = self.fusions[self.fusion_stages.index(stage)](current, fusion)
            for p in range(self.num_phases):
                skips[p].append(current[p])
        return skips

    def _decode(self, skips: list[list[torch.Tensor]], phases: Sequence[int], region_masks, deep_supervision: bool,
                use_prediction: torch.Tensor | None = None) -> dict[str, Any]:
        """Run every decoder through the guidance levels, and the decoders of ``phases`` to the top."""
        below = {p: skips[p][-1] for p in range(self.num_phases)}
        outputs: dict[int, list[torch.Tensor]] = {p: [] for p in phases}
        side_logits: list[list[torch.Tensor]] = [[] for _ in range(self.num_phases)]
        guidance_maps: list[list[torch.Tensor]] = [[] for _ in range(self.num_phases)]
        num_levels = self.decoders[0].num_levels
        for level in range(num_levels):
            active = range(self.num_phases) if level < self.guidance_levels else phases
            merged, stage_out = {}, {}
            for p in active:
                decoder = self.decoders[p]
                up = decoder.transpconvs[level](below[p])
                merged[p] = torch.cat((up, skips[p][-(level + 2)]), dim=1)
                stage_out[p] = decoder.stages[level](merged[p])
            if level < self.guidance_levels:
                masks = None if region_masks is None else [m[level] if m is not None else None
                                                          for m in region_masks]
                result = self.guidance[level]([merged[p] for p in range(self.num_phases)],
                                              [skips[p][-(level + 2)] for p in range(self.num_phases)], masks,
                                              use_prediction)
                for p in range(self.num_phases):
                    below[p] = torch.cat((stage_out[p], result["guided"][p]), dim=1)
                    side_logits[p].append(result["side_logits"][p])
                    guidance_maps[p].append(result["guidance"][p])
            else:
                for p in active:
                    below[p] = stage_out[p]
            for p in phases:
                if deep_supervision or level == num_levels - 1:
                    outputs[p].append(self.decoders[p].seg_layers[level](stage_out[p]))
        return {"outputs": {p: o[::-1] for p, o in outputs.items()}, "side_logits": side_logits,
                "guidance": guidance_maps}

    def forward(self, x: torch.Tensor, training_outputs: bool = False, region_masks: Any = None,
                use_prediction: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor] | dict[str, Any]:
        """Reference-phase logits (the inference path). ``training_outputs=True`` returns :meth:`forward_train`'s
        dict instead (only so that a DDP-wrapped training step can reach it)."""
        if training_outputs:
            return self.forward_train(x, region_masks, use_prediction)
        skips = self.encode(x)
        deep_supervision = self.decoder.deep_supervision
        result = self._decode(skips, [self.reference_channel], None, deep_supervision)
        outputs = result["outputs"][self.reference_channel]
        return outputs if deep_supervision else outputs[0]

    def forward_train(self, x: torch.Tensor, region_masks: Sequence[Sequence[torch.Tensor] | None] | None = None,
                      use_prediction: torch.Tensor | None = None) -> dict[str, Any]:
        """Training path: every phase's deep-supervision outputs, side logits and guidance maps.

        Args:
            x: (B, phases, ...).
            region_masks: per phase, a list over guidance levels (deepest first) of (B, K, ...) masks at that
                level's resolution for the prototypes, or None for the phase's own prediction.
            use_prediction: (B,) bool; True samples take their prototypes from the phases' own side predictions
                even where ``region_masks`` are given (scheduled sampling).

        Returns:
            ``outputs``: per phase, list of logits highest resolution first (length = decoder levels when deep
            supervision is on, else 1); ``side_logits`` / ``guidance``: per phase, per guidance level (deepest
            first).
        """
        skips = self.encode(x)
        result = self._decode(skips, list(range(self.num_phases)), region_masks, self.decoder.deep_supervision,
                              use_prediction)
        result["outputs"] = [result["outputs"][p] for p in range(self.num_phases)]
        return result

    def guidance_level_shapes(self, patch_size: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial shapes of the guidance levels (deepest first) for an input of ``patch_size``."""
        shapes, size = [], np.array(patch_size)
        for stride in self._encoder(0).strides:
            size = size // np.array(stride)
            shapes.append(tuple(int(s) for s in size))
        return [shapes[-(level + 2)] for level in range(self.guidance_levels)]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Activations per sample (voxels × channels) for nnU-Net's planner VRAM estimate, in training (where it
        matters): every phase's encoder and decoder plus the fusion and guidance blocks (approximated by their
        output sizes × layer count)."""
        encoder = self._encoder(0)
        total = np.int64(encoder.compute_conv_feature_map_size(input_size)) * self.num_phases
        sizes, size = [], list(input_size)
        for stride in encoder.strides:
            size = [s // st for s, st in zip(size, stride)]
            sizes.append(size)
        channels = encoder.output_channels
        for level in range(self.decoders[0].num_levels):  # decoders: transpconv + convs + seg layer, every
            voxels = int(np.prod(sizes[-(level + 2)]))    # phase (training runs all of them for the phase losses)
            per_phase = channels[-(level + 2)] * voxels * (1 + len(self.decoders[0].stages[level].convs))
            total += np.int64((per_phase + self.num_classes * voxels) * self.num_phases)
        for stage in self.fusion_stages:  # MSF: 4 branches of n/2 (two layers) + fuse + bottlenecks
            voxels = int(np.prod(sizes[stage]))
            total += np.int64(channels[stage] * voxels * (4 + 1 + self.num_phases * 2))
        for level in range(self.guidance_levels):  # CMG: reduce, 2 refine convs, embedding, guided output
            voxels = int(np.prod(sizes[-(level + 2)]))
            total += np.int64(channels[-(level + 2)] * voxels * 5 * self.num_phases)
        return total

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He initialisation of convolutions (``network.apply(...)``), as ``PlainConvUNet.initialize``."""
        InitWeights_He(1e-2)(module)
