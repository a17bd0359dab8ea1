"""Small convolution helpers shared by the CMG blocks: conv → norm → nonlinearity with any kernel, dilation and
dimensionality, built from the plans' operator classes."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ConvSpec:
    """The operator classes and their arguments, as nnU-Net's plans give them to ``PlainConvUNet``."""

    conv_op: type[nn.Module]
    norm_op: type[nn.Module] | None = None
    norm_op_kwargs: dict[str, Any] = field(default_factory=dict)
    nonlin: type[nn.Module] | None = None
    nonlin_kwargs: dict[str, Any] = field(default_factory=dict)
    conv_bias: bool = False

    @property
    def dim(self) -> int:
        return {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[self.conv_op]


def as_tuple(value: int | Sequence[int], dim: int) -> tuple[int, ...]:
    """``3`` → ``(3, 3, 3)`` (for ``dim`` 3); sequences are checked for length."""
    if isinstance(value, int):
        return (value,) * dim
    value = tuple(int(v) for v in value)
    if len(value) != dim:
        raise ValueError(f"expected {dim} values, got {value}")
    return value


def conv_norm_act(spec: ConvSpec, in_channels: int, out_channels: int, kernel: int | Sequence[int] = 1, *,
                  stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1, groups: int = 1,
                  activation: bool = True) -> nn.Sequential:
    """``conv → norm → nonlin`` with 'same' padding (for odd kernels and stride 1)."""
    kernel, dilation = as_tuple(kernel, spec.dim), as_tuple(dilation, spec.dim)
    padding = tuple((k - 1) // 2 * d for k, d in zip(kernel, dilation))
    layers: list[nn.Module] = [spec.conv_op(in_channels, out_channels, kernel, stride=as_tuple(stride, spec.dim),
                                            padding=padding, dilation=dilation, groups=groups,
                                            bias=spec.conv_bias)]
    if spec.norm_op is not None:
        layers.append(spec.norm_op(out_channels, **(spec.norm_op_kwargs or {})))
    if activation and spec.nonlin is not None:
        layers.append(spec.nonlin(**(spec.nonlin_kwargs or {})))
    return nn.Sequential(*layers)


def max_pool(spec: ConvSpec, kernel: Sequence[int]) -> nn.Module:
    """Stride-1 max pooling with 'same' padding, matching ``spec``'s dimensionality."""
    pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spec.dim]
    kernel = as_tuple(kernel, spec.dim)
    return pool(kernel, stride=1, padding=tuple((k - 1) // 2 for k in kernel))
