"""Is a trainer ready for ``torch.compile``? Graph breaks and recompiles of its network, measured on any device.

On CUDA nnU-Net compiles the network (``torch.compile(self.network)`` in ``initialize``, and the Dice part of the
loss) unless ``nnUNet_compile`` says otherwise; on the CPU it never does, so a CPU-only test suite would never run
the path every GPU user takes. This module runs that path anywhere:

* :func:`nnunet_compile` makes nnU-Net's own ``initialize`` compile on the CPU, with a backend that works there
  (``"eager"``: dynamo capture only; ``"aot_eager"``: capture and AOTAutograd's traced backward; ``"inductor"``:
  what CUDA users get, slow to build on a CPU);
* :func:`record_network_call` records the arguments with which a training step calls the network (the training
  forward, e.g. ``forward(x, training_outputs=True, region_masks=..., use_prediction=...)`` for CMG);
* :func:`graph_breaks` counts what dynamo splits a call into (``torch._dynamo.explain``): one graph and no break is
  what a fast compiled step needs;
* :class:`CompileCounter` counts the frames dynamo compiles over many steps: a forward with data-dependent Python
  control flow (empty masks, self-pair draws, teacher forcing) recompiles whenever a guard fails, so a step that
  stays at its first compilation while batches vary is one that compiles once.

Used by ``bench/bench_compile.py`` (the report for every trainer) and the compile tests.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class GraphBreaks:
    """What dynamo made of one call: ``graphs`` compiled graphs, ``breaks`` graph breaks (and why)."""

    graphs: int
    breaks: int
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"graphs": self.graphs, "breaks": self.breaks, "reasons": self.reasons}


def graph_breaks(function: Callable, *args: Any, **kwargs: Any) -> GraphBreaks:
    """Run ``function(*args, **kwargs)`` under ``torch._dynamo.explain`` (nothing is compiled for real).

    Args:
        function: a module or callable (for a module, its ``__call__``, as ``torch.compile(module)`` sees it).

    Returns:
        The number of graphs and graph breaks, with dynamo's reason for each break (deduplicated, in order).
    """
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(function)(*args, **kwargs)
    finally:
        torch._dynamo.reset()
    reasons = list(dict.fromkeys(_reason_text(r) for r in explanation.break_reasons))
    return GraphBreaks(explanation.graph_count, explanation.graph_break_count, reasons)


def _reason_text(reason: Any) -> str:
    text = str(getattr(reason, "reason", reason)).strip().splitlines()
    stack = getattr(reason, "user_stack", None) or []
    where = f" ({stack[-1].filename.rsplit('/', 1)[-1]}:{stack[-1].lineno})" if stack else ""
    return (text[0] if text else "?") + where


class CompileCounter:
    """A dynamo backend that counts the frames it is asked to compile, then hands them to ``backend``.

    Every compilation after the first of a frame is a recompile (a guard failed: a new shape, a changed Python
    value the forward branches on, ...).
    """

    def __init__(self, backend: str = "eager"):
        self.backend = backend
        self.frames = 0
        self.ops = 0

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list) -> Callable:
        self.frames += 1
        self.ops += sum(1 for node in graph_module.graph.nodes if node.op == "call_function")
        if self.backend == "eager":
            return graph_module.forward
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend(self.backend)(graph_module, example_inputs)


@contextlib.contextmanager
def nnunet_compile(backend: str | Callable = "aot_eager") -> Iterator[None]:
    """Inside this context nnU-Net's trainers compile as they do on CUDA, on any device, with ``backend``.

    nnU-Net decides in ``nnUNetTrainer._do_i_compile`` (False on the CPU) and calls ``torch.compile(module)`` with the
    default (inductor) backend; here the decision is True and ``torch.compile`` gets ``backend``. Build and
    ``initialize`` the trainer inside the context; the compiled modules keep their backend after it.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    original_compile, original_decision = torch.compile, nnUNetTrainer._do_i_compile

    @functools.wraps(original_compile)
    def compile_with_backend(model=None, **kwargs):
        kwargs.setdefault("backend", backend)
        return original_compile(model, **kwargs)

    torch.compile = compile_with_backend
    nnUNetTrainer._do_i_compile = lambda self: True
    try:
        yield
    finally:
        torch.compile = original_compile
        nnUNetTrainer._do_i_compile = original_decision


@dataclass
class NetworkCall:
    """The positional and keyword arguments of one network call (tensors detached and cloned)."""

    args: tuple
    kwargs: dict[str, Any]


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def record_network_call(network: nn.Module) -> Iterator[list[NetworkCall]]:
    """Record every call of ``network`` (e.g. the one a training step makes) as it happens.

    Yields:
        The list the calls are appended to.
    """
    calls: list[NetworkCall] = []

    def hook(module, args, kwargs):
        calls.append(NetworkCall(_detached(args), _detached(kwargs)))

    handle = network.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def batch_with_target(batch: dict, value: int | None) -> dict:
    """A training batch with every target voxel set to ``value`` (0: an empty mask; the top label: all foreground;
    None: the batch as it is), the kinds of batch whose data-dependent branches a compiled step must survive."""
    if value is None:
        return batch
    target = batch["target"]
    targets = ([torch.full_like(t, value) for t in target] if isinstance(target, (list, tuple))
               else torch.full_like(target, value))
    return {**batch, "target": targets}


def unwrap(network: nn.Module) -> nn.Module:
    """The network without its DDP and ``torch.compile`` wrappers."""
    from torch._dynamo import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(network, DistributedDataParallel):
        network = network.module
    return network._orig_mod if isinstance(network, OptimizedModule) else network
