"""Weak-supervision tests run torch on one thread: on a shared 2-core box, torch's default thread pool makes the
GAN's small convolutions tens of times slower."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
