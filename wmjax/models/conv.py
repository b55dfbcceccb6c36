"""A small convolutional patch autoencoder: the CPU-scale stand-in for DINOv2 (paper sections 2, 9).

The encoder maps uint8 pixels (..., H, W, 3) to a spatial grid of patch tokens (..., h*w, Dv),
h = H / 2**len(channels); a spatial grid, not one global vector, because a weak global code made
planning fail in a small probe (section 9). It is pretrained as an autoencoder on the task's own
images with a foreground-balanced MSE (small objects such as the dot, the ball or the T carry most of
the weight), then frozen during world-model training like DINOv2.
"""

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from wmjax.models import initializers

CONV_FIELDS = ('image_size', 'channels', 'token_dim', 'normalize_tokens')


class ConvAutoencoder(nn.Module):
  """Conv patch encoder (`__call__`) plus its decoder (`decode`).

  Attributes:
    image_size: input side H = W in pixels (divisible by 2**len(channels)).
    channels: channels of each stride-2 stage; the grid side is image_size / 2**len(channels)
      (64 px with 3 stages -> 8x8 tokens, 4 stages -> 4x4).
    token_dim: Dv, features per token.
    normalize_tokens: LayerNorm (no scale/bias) on every token, so latents have a fixed scale
      as DINOv2's normalised patch tokens do.
  """

  image_size: int = 64
  channels: tuple[int, ...] = (32, 64, 128)
  token_dim: int = 64
  normalize_tokens: bool = True

  obs_key = 'pixels'

  @property
  def grid(self) -> int:
    return self.image_size // 2**len(self.channels)

  def setup(self):
    if self.image_size % 2**len(self.channels):
      raise ValueError(f'conv image_size={self.image_size} must be divisible by '
                       f'2**len(channels)={2**len(self.channels)}.')
    conv = functools.partial(nn.Conv, padding='SAME', kernel_init=initializers.conv_kernel)
    enc = []
    for c in self.channels:
      enc += [conv(c, (4, 4), strides=2), conv(c, (3, 3))]
    self.enc = enc
    self.to_tokens = conv(self.token_dim, (1, 1))
    self.token_norm = nn.LayerNorm(use_scale=False, use_bias=False)
    self.from_tokens = conv(self.channels[-1], (3, 3))
    dec = []
    for c in reversed(self.channels):
      dec += [conv(c, (3, 3)), conv(c, (3, 3))]
    self.dec = dec
    self.to_pixels = conv(3, (3, 3))

  def __call__(self, pixels: jax.Array) -> jax.Array:
    """pixels: (..., H, W, 3) uint8 -> tokens (..., h*w, Dv)."""
    batch = pixels.shape[:-3]
    x = pixels.reshape(-1, *pixels.shape[-3:]).astype(jnp.float32) / 127.5 - 1.0  # [-1, 1].
    for i in range(0, len(self.enc), 2):
      x = nn.gelu(self.enc[i](x))
      x = x + nn.gelu(self.enc[i + 1](x))
    x = self.to_tokens(x)
    if self.normalize_tokens:
      x = self.token_norm(x)
    return x.reshape(*batch, self.grid * self.grid, self.token_dim)

  def decode(self, tokens: jax.Array) -> jax.Array:
    """tokens: (..., h*w, Dv) -> images (..., H, W, 3) in [-1, 1] units (not clipped)."""
    batch = tokens.shape[:-2]
    x = tokens.reshape(-1, self.grid, self.grid, self.token_dim)
    x = nn.gelu(self.from_tokens(x))
    for i in range(0, len(self.dec), 2):
      # Nearest 2x upsampling + conv: XLA:CPU runs transposed convolutions' gradients slowly.
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = nn.gelu(self.dec[i](x))
      x = x + nn.gelu(self.dec[i + 1](x))
    x = self.to_pixels(x)
    return x.reshape(*batch, *x.shape[1:])

  def autoencode(self, pixels: jax.Array) -> jax.Array:
    """pixels (..., H, W, 3) uint8 -> reconstruction (..., H, W, 3) in [-1, 1] units."""
    return self.decode(self(pixels))


def conv_autoencoder_from_config(config: Mapping[str, Any]) -> ConvAutoencoder:
  """Builds the module from a mapping with keys among CONV_FIELDS (e.g. `model_config.conv`)."""
  unknown = sorted(set(config) - set(CONV_FIELDS))
  if unknown:
    raise ValueError(f'Unknown conv encoder fields {unknown}; valid fields: {CONV_FIELDS}.')
  kwargs = dict(config)
  if 'channels' in kwargs:
    kwargs['channels'] = tuple(int(c) for c in kwargs['channels'])
  return ConvAutoencoder(**kwargs)


def foreground_weights(images: jax.Array, foreground_weight: float,
                       threshold: float = 0.1) -> jax.Array:
  """Per-pixel loss weights (..., H, W, 1): 1 + foreground_weight where a pixel differs from its
  image's per-channel median (the background colour) by more than `threshold` (in [0, 1] units).

  images: (..., H, W, 3) float in [0, 1].
  """
  flat = images.reshape(*images.shape[:-3], -1, 3)
  background = jnp.median(flat, axis=-2)[..., None, None, :]
  fg = jnp.max(jnp.abs(images - background), axis=-1, keepdims=True) > threshold
  return 1.0 + foreground_weight * fg.astype(jnp.float32)


def reconstruction_loss(module: ConvAutoencoder, params: Any, pixels: jax.Array,
                        foreground_share: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Foreground-balanced MSE in [0, 1] pixel units. pixels: (B, H, W, 3) uint8.

  loss = foreground_share * MSE(foreground pixels) + (1 - foreground_share) * MSE(background), so a
  dot covering 0.3% of the image still carries `foreground_share` of the loss.
  """
  target = pixels.astype(jnp.float32) / 255.0
  recon = (module.apply({'params': params}, pixels, method='autoencode') + 1.0) / 2.0
  fg = (foreground_weights(target, 1.0) > 1.0).astype(jnp.float32)
  sq = jnp.square(recon - target)
  fg_mse = jnp.sum(fg * sq) / jnp.maximum(3.0 * jnp.sum(fg), 1.0)
  bg_mse = jnp.sum((1.0 - fg) * sq) / jnp.maximum(3.0 * jnp.sum(1.0 - fg), 1.0)
  loss = foreground_share * fg_mse + (1.0 - foreground_share) * bg_mse
  return loss, {'loss': loss, 'mse': jnp.mean(sq), 'foreground_mse': fg_mse}


def pretrain_conv_autoencoder(
    images: np.ndarray,
    config: Mapping[str, Any],
    key: jax.Array,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    foreground_share: float = 0.5,
    log_every: int = 10,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Trains the conv autoencoder on the task's own images; the encoder is frozen afterwards.

  Args:
    images: (M, H, W, 3) uint8.
    config: conv encoder fields (CONV_FIELDS), e.g. `model_config.conv`; image_size must equal H.
    key: PRNG key (init and minibatch sampling).
    steps: optimiser steps (Adam with cosine decay).
    batch_size: images per step, sampled with replacement.
    learning_rate: peak Adam learning rate.
    foreground_share: share of the loss given to pixels that differ from the background colour.
    log_every: steps between progress-bar updates.
    progress: show a tqdm bar.

  Returns:
    (encoder_params, metrics): the module's parameters (encoder and decoder; use as
    `params['encoder']` of a WorldModel with encoder 'conv'), and metrics with 'loss' (steps,)
    per-step training losses plus 'initial_*' / 'final_*' ('loss', 'mse', 'foreground_mse') measured
    on up to 256 of the images before and after training.
  """
  module = conv_autoencoder_from_config(config)
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != (module.image_size, module.image_size, 3):
    raise ValueError(f'images must be (M, {module.image_size}, {module.image_size}, 3) uint8; '
                     f'got {images.shape}.')
  if images.dtype != np.uint8:
    raise ValueError(f'images must be uint8; got {images.dtype}.')
  if steps < 1 or batch_size < 1:
    raise ValueError(f'steps and batch_size must be >= 1; got {steps}, {batch_size}.')
  init_key, data_key = jax.random.split(key)
  params = jax.jit(lambda k: module.init(k, images[:1], method='autoencode')['params'])(init_key)
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
  opt_state = tx.init(params)
  data = jnp.asarray(images)
  probe = data[:256]

  @jax.jit
  def train_step(params, opt_state, data, k):
    # One jitted step per call: convolutions inside a `lax.scan` ran ~50x slower on XLA:CPU.
    batch = data[jax.random.randint(k, (batch_size,), 0, data.shape[0])]
    grads, m = jax.grad(
        lambda p: reconstruction_loss(module, p, batch, foreground_share), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, m['loss']

  evaluate = jax.jit(lambda p, x: reconstruction_loss(module, p, x, foreground_share)[1])
  metrics = {f'initial_{k}': np.asarray(v) for k, v in evaluate(params, probe).items()}
  losses = []
  keys = jax.random.split(data_key, steps)
  with tqdm.tqdm(total=steps, desc='conv autoencoder', disable=not progress) as bar:
    for i in range(steps):
      params, opt_state, loss = train_step(params, opt_state, data, keys[i])
      losses.append(loss)
      if (i + 1) % log_every == 0 or i + 1 == steps:
        bar.update(i + 1 - bar.n)
        bar.set_postfix(loss=float(loss))
  metrics.update({f'final_{k}': np.asarray(v) for k, v in evaluate(params, probe).items()})
  metrics['loss'] = np.asarray(jnp.stack(losses))
  return params, metrics
