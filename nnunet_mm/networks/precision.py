"""Computations that must stay in float32 under mixed precision.

nnU-Net trains under ``torch.autocast`` on CUDA (float16, with a grad scaler). Autocast casts the *inputs* of matrix
products (``mm``, ``bmm``, ``einsum``'s products, convolutions) to float16 whatever their dtype, so calling
``.float()`` before a sum over many voxels does not keep it in float32: a prototype summed over 65 536 voxels of
value 4 is ``inf`` in float16 (largest value 65 504). :func:`float32_compute` runs a function with autocast switched
off and its tensor arguments in float32, which is what the sums over voxels of prototypes, channel attention,
NT-Xent and soft-Dice terms need. Works under ``torch.compile`` (dynamo traces the autocast context).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Function = TypeVar("Function", bound=Callable[..., Any])


def _as_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_as_float32(v) for v in value)
    return value


def _device_type(values: Any) -> str | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)):
            found = _device_type(value)
            if found is not None:
                return found
    return None


def float32_compute(function: Function) -> Function:
    """Decorator: call ``function`` with autocast off on its tensors' device and floating-point tensor arguments
    (also inside lists and tuples) cast to float32; its results are float32."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device_type = _device_type(list(args) + list(kwargs.values())) or "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return function(*_as_float32(args), **{key: _as_float32(v) for key, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
