"""Rectified flow (paper section 2.1: "Rectified Flow ... velocity prediction"), the way BAGEL uses it.

A clean latent x0 and Gaussian noise are joined by a straight line, x_t = (1 - t) x0 + t noise, so
t = 1 is pure noise and t = 0 is the image. The model predicts the velocity along the line,
noise - x0 (pointing from data to noise), and sampling walks the line back from t = 1 to t = 0 with
Euler steps. Timesteps are shifted towards the noisy end by `s t / (1 + (s - 1) t)`: a larger `s`
spends more steps (and more training) at high noise, which large images need.
"""

import math

import torch
from torch import Tensor


def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """Map t in [0, 1] to s t / (1 + (s - 1) t): 0 and 1 stay, everything between moves up for s > 1."""
    return shift * t / (1 + (shift - 1) * t)


def training_timesteps(raw: Tensor, shift: float) -> Tensor:
    """Timesteps from raw standard-normal draws: logit-normal t = sigmoid(raw), then shifted.

    A raw value of -inf gives t = 0: a clean image that serves as context.
    """
    return shift_timesteps(torch.sigmoid(raw), shift)


def raw_timestep(t: float, shift: float) -> float:
    """The raw draw that training_timesteps turns into `t` (the inverse of the shift, then of the sigmoid):
    how a validation set fixes the time of a noised image."""
    u = t / (shift - (shift - 1) * t)
    return math.log(u / (1 - u))


def add_noise(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t noise, with one t per row of x0 (N, D)."""
    return (1 - t[:, None]) * x0 + t[:, None] * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """d x_t / dt: what the model learns to predict."""
    return noise - x0


def sampling_schedule(num_timesteps: int, shift: float) -> Tensor:
    """The grid linspace(1, 0, num_timesteps), shifted. The model runs at all but the last point."""
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps must be at least 2 (the grid includes t = 1 and t = 0), got {num_timesteps}")
    return shift_timesteps(torch.linspace(1, 0, num_timesteps), shift)


def euler_step(x: Tensor, velocity: Tensor, t: float, t_next: float) -> Tensor:
    """Move from time t to the smaller t_next along the predicted velocity."""
    return x - velocity * (t - t_next)
