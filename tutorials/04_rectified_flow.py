# %% [markdown]
# # 04 · Rectified flow
#
# BAGEL draws an image by walking from pure noise to a clean latent along a velocity field that the
# model predicts: rectified flow (paper section 2.1). In this tutorial you will see the straight line
# between data and noise that training samples from, how the timesteps are drawn and shifted towards
# the noisy end, a tiny velocity network learn a 2-D distribution and Euler-sample it, and then the
# same steps on Shapes World latents with the embedded toy model.
#
# Runs in about 16 s on a 2-core CPU; `BAGEL_FAST=1` for a quick pass.

# %%
import inspect
import math
import os
import random
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import bagel_mini
from bagel_mini import flow, shapes_world
from bagel_mini.checkpoint import load_checkpoint
from bagel_mini.images import patchify, to_tensor, unpatchify
from bagel_mini.inference import ImageSettings, Inferencer
from bagel_mini.tokenizer import BagelTokenizer

FAST = os.environ.get("BAGEL_FAST") == "1"  # CI's fast mode: the same cells on less data, in seconds
FIGURES = Path(os.environ.get("BAGEL_FIGURES", Path(bagel_mini.__file__).parents[1] / "tutorials" / "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)  # toy-sized tensors gain little from a second thread; one stays fast on a busy CPU

# %% [markdown]
# ## The straight line from data to noise
#
# Take a clean sample `x0` (for BAGEL, the latent of an image) and Gaussian noise of the same shape.
# Rectified flow joins them by a straight line, `x_t = (1 - t) x0 + t noise`: `t = 0` is the clean
# sample and `t = 1` pure noise. Moving along that line has a constant velocity, `noise - x0`, and
# that velocity is what the model learns to predict from `x_t` and `t`. `flow.py` writes both in one
# line each (`add_noise` takes one `t` per row, as BAGEL noises each image with its own `t`):

# %%
print(inspect.getsource(flow.add_noise))
print(inspect.getsource(flow.velocity_target))

# %% [markdown]
# ## Which timesteps training sees
#
# During training every noised image gets one random `t`. BAGEL draws it *logit-normal*: a standard
# normal number pushed through a sigmoid, so middle values of `t` are common and the ends rare. Then
# it applies the *timestep shift* `s t / (1 + (s - 1) t)`, which keeps 0 and 1 in place and moves
# everything between towards the noisy end when `s > 1`. Large images need that: at a given `t` they
# still show a lot of their structure through the noise, so more of the training and of the sampling
# steps should be spent at high noise. The paper's training recipe raises the shift from 1 to 4 for
# the higher-resolution stage (Table 3); the official sampler uses a shift of 3.

# %%
print(inspect.getsource(flow.shift_timesteps))
print(inspect.getsource(flow.training_timesteps))
print(inspect.getsource(flow.sampling_schedule))

# %% [markdown]
# Below, left: histograms of training timesteps (`training_timesteps` on many standard-normal draws)
# for three shifts. Middle: the shift as a map from `t` to the shifted `t`. Right: the sampling grid
# of 11 points (10 model evaluations) for the same shifts: with `s = 3` the points crowd near `t = 1`,
# so the sampler takes small steps while the image is mostly noise and large ones at the end.

# %%
SHIFTS = (1.0, 3.0, 4.0)
raw = torch.randn(20_000 if FAST else 200_000)
grid = torch.linspace(0, 1, 101)

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for shift in SHIFTS:
    axes[0].hist(flow.training_timesteps(raw, shift).numpy(), bins=50, range=(0, 1), histtype="step", lw=1.5,
                 density=True, label=f"shift {shift:g}")  # fmt: skip
    axes[1].plot(grid, flow.shift_timesteps(grid, shift), label=f"shift {shift:g}")
    schedule = flow.sampling_schedule(11, shift)
    axes[2].plot(schedule, [shift] * len(schedule), "o", ms=5)
axes[0].set(title="training t = shift(sigmoid(randn))", xlabel="t", ylabel="density")
axes[1].set(title="the shift  s t / (1 + (s - 1) t)", xlabel="t", ylabel="shifted t")
axes[2].set(title="sampling grid, 11 points", xlabel="t  (1 = noise, 0 = clean)", ylabel="shift",
            yticks=SHIFTS, ylim=(0, 5))  # fmt: skip
axes[2].invert_xaxis()
axes[0].legend()
axes[1].legend()
fig.tight_layout()
fig.savefig(FIGURES / "04_timesteps.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## A toy flow in two dimensions
#
# Before images, a distribution we can see whole: points in eight clusters on a ring. The "model"
# here is a tiny MLP that reads a point `x_t` and its `t` and returns a 2-D velocity. It is not
# BAGEL; it only stands in for the decoder so that the training recipe of `flow.py` is visible on
# its own: draw `t` with `training_timesteps`, noise with `add_noise`, regress onto `velocity_target`
# with a mean squared error, exactly the MSE term of BAGEL's loss.


# %%
def ring_of_clusters(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points from 8 small Gaussian clusters on a circle of radius 2: the 2-D "data"."""
    angles = torch.randint(0, 8, (n,), generator=generator) * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return centres + 0.15 * torch.randn(n, 2, generator=generator)


velocity_net = nn.Sequential(
    nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2)
)
optimizer = torch.optim.Adam(velocity_net.parameters(), lr=2e-3)
generator = torch.Generator().manual_seed(0)
steps = 300 if FAST else 3000
losses = []
for _ in range(steps):
    x0 = ring_of_clusters(512, generator)
    noise = torch.randn(512, 2, generator=generator)
    t = flow.training_timesteps(torch.randn(512, generator=generator), shift=1.0)
    x_t = flow.add_noise(x0, noise, t)
    prediction = velocity_net(torch.cat([x_t, t[:, None]], dim=1))
    loss = ((prediction - flow.velocity_target(x0, noise)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"flow MSE: first 50 steps {sum(losses[:50]) / 50:.3f}, last 50 steps {sum(losses[-50:]) / 50:.3f}")

# %% [markdown]
# The loss does not go to zero, and it should not: a point `x_t` in the middle of the plane lies on
# lines from many different clusters, so the best the network can do is predict their *average*
# velocity. Sampling follows that average field, whose paths bend, and still lands on the data.
#
# ## Euler sampling
#
# To sample, start from noise at `t = 1` and step down the grid of `sampling_schedule`, moving
# against the predicted velocity at each point (`euler_step`; the model runs at every grid point
# except the last, `t = 0`).

# %%
print(inspect.getsource(flow.euler_step))


# %%
@torch.no_grad()
def sample_toy(noise: torch.Tensor, num_timesteps: int, shift: float) -> list[torch.Tensor]:
    """Euler-sample the toy MLP from `noise`; returns x at every point of the time grid."""
    schedule = flow.sampling_schedule(num_timesteps, shift).tolist()
    path = [noise]
    for t, t_next in zip(schedule[:-1], schedule[1:]):
        x = path[-1]
        velocity = velocity_net(torch.cat([x, torch.full((len(x), 1), t)], dim=1))
        path.append(flow.euler_step(x, velocity, t, t_next))
    return path


start = torch.randn(1000 if FAST else 3000, 2, generator=torch.Generator().manual_seed(1))
path = torch.stack(sample_toy(start, num_timesteps=26, shift=1.0))  # (26, points, 2)
data = ring_of_clusters(len(start), torch.Generator().manual_seed(2))

shown = torch.arange(0, len(start), len(start) // 300)  # draw 300 of the trajectories
fig, ax = plt.subplots(figsize=(5, 5))
ax.plot(path[:, shown, 0], path[:, shown, 1], color="0.55", lw=0.5, alpha=0.6)
ax.scatter(*path[0, shown].T, s=6, color="tab:blue", label="noise, t = 1", zorder=3)
ax.scatter(*path[-1, shown].T, s=6, color="tab:red", label="sample, t = 0", zorder=3)
ax.set(title="rectified flow: noise to data in 25 Euler steps", xlim=(-3.2, 3.2), ylim=(-3.2, 3.2),
       aspect="equal", xticks=[], yticks=[])  # fmt: skip
ax.legend(loc="lower right", markerscale=2, fontsize=9)
fig.savefig(FIGURES / "04_rectified_flow.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# How many steps does the sampler need, and what does the shift change? Below, the same noise sampled
# with 2, 4 and 16 Euler steps, without shift (top) and with shift 3 (bottom), next to the true
# data (right); each title gives the share of points that land within 0.45 of a cluster centre.
# With very few steps the straight Euler moves cut the bends of the paths and smear the clusters;
# more steps follow them. On this 2-D toy, trained without shift, shifting the sampling grid only
# hurts: it spends the few steps near the noise and leaves one big jump for the end. The next section
# shows why images are different.


# %%
def share_on_clusters(points: torch.Tensor) -> float:
    """The share of points within 0.45 of the nearest cluster centre (3 cluster widths)."""
    angles = torch.round(torch.atan2(points[:, 1], points[:, 0]) / (2 * math.pi / 8)) * (2 * math.pi / 8)
    nearest = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    return ((points - nearest).norm(dim=1) < 0.45).float().mean().item()


fig = plt.figure(figsize=(13, 6.4))
panels = fig.add_gridspec(2, 4)
for row, shift in enumerate((1.0, 3.0)):
    for col, num_steps in enumerate((2, 4, 16)):
        points = sample_toy(start, num_timesteps=num_steps + 1, shift=shift)[-1]
        ax = fig.add_subplot(panels[row, col])
        ax.scatter(*points.T, s=2, color="tab:red")
        ax.set_title(f"{num_steps} steps, shift {shift:g}: {share_on_clusters(points):.0%} on a cluster")
ax = fig.add_subplot(panels[:, 3])
ax.scatter(*data.T, s=2, color="black")
ax.set_title(f"data: {share_on_clusters(data):.0%} on a cluster")
for ax in fig.axes:
    ax.set(xlim=(-3.2, 3.2), ylim=(-3.2, 3.2), aspect="equal", xticks=[], yticks=[])
fig.tight_layout()
fig.savefig(FIGURES / "04_euler_steps.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# ## The same line on Shapes World latents
#
# BAGEL runs this flow in the latent space of its frozen autoencoder, not on pixels. We load the
# embedded toy model (`bagel_mini.DEFAULT_MODEL`: a small MoT model with its own small autoencoder,
# trained for about three hours on a CPU, and weak; see its model card) and encode a Shapes World image. The
# latent is cut into patches (`images.patchify`): 2x2 in the released model, one 64-number token per 16x16
# pixels; 1x1 in the toy, one 16-number token per 8x8 pixels, so that a toy object spans several tokens.
# These are the rows that `add_noise` works on. We noise them to several `t` and decode each `x_t` to see what
# the model is given at that `t`.

# %%
model, autoencoder = load_checkpoint(bagel_mini.DEFAULT_MODEL)
tokenizer = BagelTokenizer.from_dir(bagel_mini.DEFAULT_MODEL)
config = model.config
patch = config.latent_patch_size

task = shapes_world.text_to_image(random.Random(3), tag="two_object")
with torch.no_grad():
    latent = autoencoder.encode_mean(to_tensor(task.image)[None])[0]  # (16, 8, 8) for a 64x64 image
h, w = latent.shape[1] // patch, latent.shape[2] // patch
x0 = patchify(latent, patch)  # (h * w, 16 * patch**2) tokens, the rows BAGEL noises
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
print(f"prompt: {task.prompt!r}; latent {tuple(latent.shape)} -> {tuple(x0.shape)} tokens")


def show_latent_tokens(ax, tokens: torch.Tensor) -> None:
    """Decode (h * w, 64) latent tokens with the autoencoder and show the picture."""
    with torch.no_grad():
        pixels = autoencoder.decode(unpatchify(tokens, h, w, patch, config.vae.z_channels)[None])[0]
    ax.imshow((pixels.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1))


times = [0.0, 0.25, 0.5, 0.75, 1.0]
fig, axes = plt.subplots(1, len(times) + 1, figsize=(13, 2.8))
axes[0].imshow(task.image)
axes[0].set_title("the image")
for ax, t in zip(axes[1:], times):
    show_latent_tokens(ax, flow.add_noise(x0, noise, torch.full((len(x0),), t)))
    ax.set_title(f"t = {t:g}")
for ax in axes:
    ax.axis("off")
fig.suptitle("decoded x_t = (1 - t) x0 + t noise")
fig.tight_layout()
fig.savefig(FIGURES / "04_latent_noising.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# At `t = 0` we see the toy autoencoder's reconstruction, already a little blurry (the cross comes back
# with rounded arms). Notice how long the picture survives: at `t = 0.5` both shapes are still plain
# among specks, and only towards `t = 1` does the noise win (decoded, pure noise is a scatter of small
# coloured blobs: the decoder makes Shapes World's colours out of any latent). The layout of an image is
# decided at high noise, and the steps at small `t` only sharpen it. This is what the shift is for: it
# moves training and sampling steps to where the decisions are made, and the more pixels an image has,
# the more of it survives a given `t`, so larger images want a larger shift.
#
# ## The model's own Euler trajectory
#
# Finally the real sampler: `Inferencer.generate_image` (inference.py) reads the prompt from the KV
# cache (the stored keys and values of the context, tutorial 08) and takes Euler steps on
# `sampling_schedule` with the official shift of 3 (the toy model was trained with shift 1), with
# classifier-free guidance against a context without the text (tutorial 07). With
# `trace=True` it returns, for every step, the `t`, the current `x_t` and the guided velocity `v`.
# Two rows are worth seeing: the decoded `x_t` itself, and the model's current guess of the clean
# image, `x_t - t v` (follow the straight line to `t = 0` with the velocity predicted now). It draws
# from the same seed-0 noise as the `t = 1` panel above. The toy model gets a prompt's shapes right only
# now and then (here two joined blue blobs with a green edge, neither a square nor a cross), so judge
# the process, not the picture.

# %%
engine = Inferencer(model, autoencoder, tokenizer, tokenizer.special_ids)
settings = ImageSettings(num_timesteps=11 if FAST else 26, timestep_shift=3.0)
context = engine.add_text(engine.empty_context(), task.prompt)
image = engine.generate_image(
    context, (64, 64), no_text_context=engine.empty_context(), settings=settings, seed=0, trace=True
)
print(f"{len(image.trace)} model evaluations at t = " + ", ".join(f"{r['t']:.2f}" for r in image.trace))

steps_shown = [round(i * (len(image.trace) - 1) / 4) for i in range(5)]
fig, axes = plt.subplots(2, len(steps_shown) + 1, figsize=(13, 5))
for col, index in enumerate(steps_shown):
    record = image.trace[index]
    show_latent_tokens(axes[0, col], record["x"])
    axes[0, col].set_title(f"x_t at t = {record['t']:.2f}")
    show_latent_tokens(axes[1, col], flow.euler_step(record["x"], record["v"], record["t"], 0.0))
    axes[1, col].set_title("its guess x_t - t v")
axes[0, -1].imshow(image.to_pil())
axes[0, -1].set_title("result, t = 0")
axes[1, -1].imshow(task.image)
axes[1, -1].set_title("a true render")
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(f"the toy model drawing {task.prompt!r}")
fig.tight_layout()
fig.savefig(FIGURES / "04_model_trajectory.png", dpi=120, bbox_inches="tight")
fig

# %% [markdown]
# The guess has its layout by about `t = 0.75` and changes little after: most of the work happens in
# the first, noisy steps, where the shifted grid puts most of them.
#
# What to take away:
# - training: one `t` per image from `shift(sigmoid(randn))`, `x_t = (1 - t) x0 + t noise`, MSE
#   against `noise - x0` (`model.py` does exactly this on the VAE tokens of a packed batch);
# - sampling: start at noise, step down the shifted grid with `x <- x - v (t - t_next)`;
# - the shift decides where training and sampling steps concentrate; BAGEL pushes them towards the
#   noisy end, more so for large images.
