"""Kernel-runtime fixtures: one torch thread, a tiny trained model."""

import pytest

from tests.support.kernel import tiny_cartpole_dqn


@pytest.fixture(scope="module")
def one_torch_thread():
    # Tiny nets on a shared 2-core box: a second thread only adds contention.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(one_torch_thread):
    """A DQN trained for a few hundred CartPole steps: enough to save, load and evaluate."""
    return tiny_cartpole_dqn(seed=0, learning_starts=200).learn(300)
