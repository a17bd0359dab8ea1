"""torch.compile, as nnU-Net uses it on CUDA, on the CPU: every trainer's network captures its training and
inference forward in one graph, its training step runs compiled (dynamo + AOTAutograd, backend ``aot_eager``) through
nnU-Net's own ``initialize``, and varying batches (empty masks, all foreground, teacher forcing vs predicted
prototypes, self-pairs, synthetic tumours or none) never recompile after the first step. (Inductor, what CUDA users
get, takes minutes to build these graphs on a 2-core CPU; ``bench/bench_compile.py`` runs it on the GPU.)"""
from __future__ import annotations

import pytest
import torch

from nnunet_mm.training.compile_readiness import (CompileCounter, batch_with_target, graph_breaks, nnunet_compile,
                                                  record_network_call, unwrap)
from trainer_zoo import PLUGIN_TRAINERS, build_trainer, fixed_batches, seed_everything


def _inference_input(trainer) -> torch.Tensor:
    patch = [int(s) for s in trainer.configuration_manager.patch_size]
    return torch.randn(1, trainer.num_input_channels, *patch, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", PLUGIN_TRAINERS)
def test_training_and_inference_forward_have_no_graph_breaks(zoo, name):
    trainer = build_trainer(name, zoo.preprocessed)
    network = unwrap(trainer.network)
    with record_network_call(network) as calls:
        trainer.train_step(fixed_batches(trainer, 1)[0])
    assert len(calls) == 1  # the step calls the network once (DDP synchronises one forward)
    training = graph_breaks(network, *calls[0].args, **calls[0].kwargs)
    assert (training.graphs, training.breaks) == (1, 0), training.reasons

    network.eval()
    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's predictor runs it
    inference = graph_breaks(network, _inference_input(trainer))
    assert (inference.graphs, inference.breaks) == (1, 0), inference.reasons


@pytest.mark.parametrize("name, backend", [(name, "aot_eager" if name == "CMGTrainer" else "eager")
                                           for name in PLUGIN_TRAINERS])
def test_the_compiled_step_does_not_recompile_when_batches_vary(zoo, name, backend):
    """nnU-Net's initialize compiles the network and the Dice loss; the frames compiled in the first step are all
    there ever are. CMG's step (the largest graph, teacher forcing mixed with predicted prototypes) goes through
    AOTAutograd too (``aot_eager``: its backward is traced); the others are captured by dynamo only (``eager``),
    which is what recompiles depend on (each takes seconds instead of tens of seconds on a 2-core CPU)."""
    seed_everything(0)
    counter = CompileCounter(backend)
    with nnunet_compile(counter):
        trainer = build_trainer(name, zoo.preprocessed)
    assert type(trainer.network).__name__ == "OptimizedModule"
    foreground = trainer.label_manager.num_segmentation_heads - 1
    batches = fixed_batches(trainer, 2)
    losses = [float(trainer.train_step(batches[0])["loss"])]
    first_step_frames = counter.frames
    for batch, target_value in ((batches[1], 0), (batches[0], foreground), (batches[1], None)):
        losses.append(float(trainer.train_step(batch_with_target(batch, target_value))["loss"]))
    assert counter.frames == first_step_frames, f"{counter.frames - first_step_frames} recompile(s)"
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("name", ["CMGTrainer", "CMCTrainer"])
def test_compiled_inference_predicts_what_the_eager_network_does(zoo, name):
    """What ``nnUNet_compile=1 nnUNetv2_predict`` runs: the compiled inference forward gives the eager logits."""
    trainer = build_trainer(name, zoo.preprocessed)
    network = unwrap(trainer.network).eval()
    trainer.set_deep_supervision_enabled(False)
    x = _inference_input(trainer)
    with torch.no_grad():
        expected = network(x)
        compiled = torch.compile(network, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-4)
