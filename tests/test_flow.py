import math

import pytest
import torch
from helpers import assert_names

from bagel_mini.flow import (
    add_noise,
    euler_step,
    sampling_schedule,
    shift_timesteps,
    training_timesteps,
    velocity_target,
)


def test_shift_keeps_the_ends_and_moves_the_middle_towards_noise():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    shifted = shift_timesteps(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert shifted[2] == 0.75  # 3 * 0.5 / (1 + 2 * 0.5): every step exact in binary
    assert torch.equal(shift_timesteps(t, 1.0), t)


def test_sampling_schedule_matches_the_official_grid():
    """num_timesteps=5 with shift 3: the model runs at t = 1, 0.9, 0.75, 0.5 (the reference README)."""
    schedule = sampling_schedule(5, 3.0)
    # float32 values in [0, 1]: one rounding of 0.9 is at most 3e-8.
    torch.testing.assert_close(schedule, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]), rtol=0, atol=1e-7)


def test_training_timesteps_are_sigmoid_then_shift_and_clean_images_get_zero():
    t = training_timesteps(torch.tensor([float("-inf"), 0.0, 1.0], dtype=torch.float64), 2.0)
    sigmoid_one = 1 / (1 + math.exp(-1.0))
    expected = torch.tensor([0.0, 2 / 3, 2 * sigmoid_one / (1 + sigmoid_one)], dtype=torch.float64)
    torch.testing.assert_close(t, expected, rtol=0, atol=1e-12)  # float64, values in [0, 1]


def test_euler_with_the_true_velocity_walks_noise_back_to_the_data():
    """On a straight line the velocity is constant, so Euler steps are exact on any schedule."""
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 6, 4, generator=generator, dtype=torch.float64)
    schedule = sampling_schedule(7, 3.0)
    x = add_noise(x0, noise, torch.ones(6, dtype=torch.float64))
    for t, t_next in zip(schedule[:-1], schedule[1:]):
        x = euler_step(x, velocity_target(x0, noise), float(t), float(t_next))
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-12)  # float64 rounding of six steps on values of size 1


def test_noising_puts_data_at_zero_and_noise_at_one():
    x0, noise = torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.equal(add_noise(x0, noise, torch.tensor([0.0, 1.0])), torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_a_schedule_needs_two_points():
    with pytest.raises(ValueError) as error:
        sampling_schedule(1, 1.0)
    assert_names(error, "num_timesteps", "1", "2")
