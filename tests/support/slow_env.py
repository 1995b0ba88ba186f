"""A test-only env: CartPole whose steps become slow part-way through a run."""

from __future__ import annotations

import time

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class SlowCartPole(gym.Env):
    """CartPole (episodes capped at 500 steps) that sleeps `sleep_s` per step after `slow_after` steps."""

    def __init__(self, slow_after: int = 1000, sleep_s: float = 0.005) -> None:
        self.inner = CartPoleEnv()
        self.observation_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self.slow_after = slow_after
        self.sleep_s = sleep_s
        self.steps = 0
        self.episode_steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode_steps = 0
        return self.inner.reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        self.episode_steps += 1
        if self.steps > self.slow_after:
            time.sleep(self.sleep_s)
        obs, reward, terminated, truncated, info = self.inner.step(action)
        return obs, reward, terminated, truncated or self.episode_steps >= 500, info
