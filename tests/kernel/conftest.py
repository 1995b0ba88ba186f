"""Kernel-runtime fixtures: one torch thread, a tiny trained model."""

import pytest


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
    from stable_baselines3 import DQN

    from kernel_template.envs import make_env

    model = DQN(
        "MlpPolicy",
        make_env("CartPole-v1", {}, 0),
        learning_starts=200,
        buffer_size=1000,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    return model.learn(300)
