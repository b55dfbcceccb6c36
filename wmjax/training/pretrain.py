"""Pretraining the conv autoencoder encoder on a task's own frames (PAPER.md sections 2, 9).

`pretrain_conv_autoencoder` trains `wmjax.models.ConvAutoencoder` with a foreground-balanced MSE
(small objects such as the dot, the ball or the T carry most of the weight); the world model then
uses its encoder frozen, like DINOv2. `render_frames` renders the dataset states it trains on.

Design choice: an auxiliary state readout during pretraining. DINOv2's patch tokens encode where
objects are; a tiny autoencoder on 64 px frames does not without help: with reconstruction alone,
the tokens of the cpu configs barely changed when the Wall dot (a 1.7 px Gaussian) moved, and a
world model trained on them predicted the visual channel worse than "no change". When the
simulator's state of every frame is given (`states`), a linear head reads the normalised state from
the flattened token grid and its MSE, weighted by `state_weight`, is added to the reconstruction
loss, so object positions become linearly decodable, large-scale directions of the tokens (state
entries one frame cannot show, such as velocities, cost a constant and shape nothing). The head
is dropped after pretraining; the world model sees only the frozen encoder, as before. Then the
tokens are standardised (`ConvAutoencoder` token_mean / token_scale): the constant background
dominated every LayerNormed token, so the part that moves with the scene was ~1e-4 of its scale.
On Wall (cpu config, 600 pretraining steps, 2,500 world-model steps) the held-out one-step visual
error went from 1.2x the "no change" error to 0.17x.
"""

from collections.abc import Mapping
import hashlib
import json
import os
import shutil
from typing import Any
import warnings

import flax.linen as nn
from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from wmjax import io
from wmjax.envs import render as render_lib
from wmjax.models.conv import conv_autoencoder_from_config
from wmjax.models.conv import ConvAutoencoder

# The resumable state of an interrupted pretraining, beside a run's checkpoints.
RESUME_FILE = 'encoder_pretraining.msgpack'


def render_frames(env: Any, states: np.ndarray, image_size: int, batch: int = 256) -> np.ndarray:
  """(M, S) states -> (M, H, W, 3) uint8 images, rendered in jitted batches."""
  fn = jax.jit(jax.vmap(lambda s: render_lib.to_uint8(env.render(s, image_size))))
  out = []
  for i in range(0, len(states), batch):
    chunk = states[i:i + batch]
    pad = batch - len(chunk)
    imgs = fn(jnp.asarray(np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk))
    out.append(np.asarray(imgs)[:len(chunk)])
  return np.concatenate(out)


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
  recon = module.apply({'params': params}, pixels, method='autoencode')
  return _reconstruction_loss(recon, pixels, foreground_share)


def _reconstruction_loss(recon: jax.Array, pixels: jax.Array,
                         foreground_share: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """recon: (B, H, W, 3) in [-1, 1] units; pixels: (B, H, W, 3) uint8."""
  target = pixels.astype(jnp.float32) / 255.0
  recon = (recon + 1.0) / 2.0
  fg = (foreground_weights(target, 1.0) > 1.0).astype(jnp.float32)
  sq = jnp.square(recon - target)
  fg_mse = jnp.sum(fg * sq) / jnp.maximum(3.0 * jnp.sum(fg), 1.0)
  bg_mse = jnp.sum((1.0 - fg) * sq) / jnp.maximum(3.0 * jnp.sum(1.0 - fg), 1.0)
  loss = foreground_share * fg_mse + (1.0 - foreground_share) * bg_mse
  return loss, {'loss': loss, 'mse': jnp.mean(sq), 'foreground_mse': fg_mse}


class StateHead(nn.Module):
  """Linear readout of the state from a frame's whole token grid (pretraining only).

  Attributes:
    state_dim: S, size of the (normalised) state vector.
  """

  state_dim: int

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """tokens: (B, h*w, Dv) -> normalised state (B, S)."""
    flat_tokens = tokens.reshape(tokens.shape[0], -1)
    return nn.Dense(self.state_dim, kernel_init=nn.initializers.zeros)(flat_tokens)


def pretraining_loss(module: ConvAutoencoder, head: StateHead | None, params: Any,
                     pixels: jax.Array, states: jax.Array | None, foreground_share: float,
                     state_weight: float, feature_weights: jax.Array | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Reconstruction loss plus `state_weight` x the state readout's MSE (module docstring).

  Args:
    module: the autoencoder.
    head: the state readout, or None for reconstruction alone.
    params: {'autoencoder': ..., 'head': ...} ('head' only with a head).
    pixels: (B, H, W, 3) uint8.
    states: (B, S) normalised states (zero mean, unit variance per dimension), or None.
    foreground_share: see `reconstruction_loss`.
    state_weight: weight of the state MSE.
    feature_weights: optional (S,) weight of each state dimension's squared error inside the
      mean (None: all 1).

  Returns:
    (loss, metrics): metrics 'loss' (the total), 'reconstruction_loss', 'mse', 'foreground_mse'
    and, with a head, 'state_mse' (normalised units: 1 is the variance of the state; unweighted).
  """
  tokens = module.apply({'params': params['autoencoder']}, pixels)
  recon = module.apply({'params': params['autoencoder']}, tokens, method='decode')
  loss, metrics = _reconstruction_loss(recon, pixels, foreground_share)
  metrics['reconstruction_loss'] = loss
  if head is not None:
    pred = head.apply({'params': params['head']}, tokens)
    sq = jnp.square(pred - states)
    metrics['state_mse'] = jnp.mean(sq)
    weighted = sq if feature_weights is None else sq * feature_weights
    loss = loss + state_weight * jnp.mean(weighted)
  metrics['loss'] = loss
  return loss, metrics


def normalise_states(states: np.ndarray) -> np.ndarray:
  """(M, S) -> (M, S) float32 with zero mean and unit variance per dimension (constant dims: 0)."""
  states = np.asarray(states, np.float64)
  std = states.std(axis=0)
  return ((states - states.mean(axis=0)) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


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
    states: np.ndarray | None = None,
    state_weight: float = 1.0,
    feature_weights: np.ndarray | None = None,
    resume_file: str | None = None,
    save_every: int = 0,
    write_resume: bool = True,
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
    states: optional (M, S) simulator state features of the images; adds the auxiliary linear state
      readout (module docstring), trained on the states normalised per dimension and dropped after.
      They should be continuous in the image: pass `wmjax.data.readout_targets(task, states)`
      (angles as cos and sin, as the training stage does), not wrapped angles.
    state_weight: weight of the readout's MSE beside the reconstruction loss (used with `states`;
      0 trains the head without shaping the encoder).
    feature_weights: optional (S,) weights >= 0 of the state dimensions inside the readout's MSE
      (e.g. `wmjax.data.readout_weights(task, 'block_angle=8')`); None: all 1.
    resume_file: optional path of the resumable state (`RESUME_FILE` beside a run's checkpoints).
      If it exists, pretraining continues from its step and ends with the parameters of an
      uninterrupted run (step i's minibatch key is a function of `key` and i only); one written
      with other inputs or settings is refused (ValueError naming them), one that cannot be read
      is moved to `corrupt/` beside it with a warning and pretraining starts over. The caller
      removes the file once the result is saved elsewhere.
    save_every: steps between writes of `resume_file` (0: never).
    write_resume: False reads `resume_file` but never writes it (the other processes of a
      multi-process job).

  Returns:
    (encoder_params, metrics): the module's parameters (encoder and decoder; use as
    `params['encoder']` of a WorldModel with encoder 'conv'), and metrics with 'loss' (steps,)
    per-step training losses plus 'initial_*' / 'final_*' ('loss', 'mse', 'foreground_mse', and
    'state_mse' with `states`) measured on up to 256 of the images before and after training,
    and 'resumed_from_step' (0 unless continued from `resume_file`).
  """
  module = conv_autoencoder_from_config(config)
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != (module.image_size, module.image_size, 3):
    raise ValueError(f'images must be (M, {module.image_size}, {module.image_size}, 3) uint8; '
                     f'got {images.shape}.')
  if images.dtype != np.uint8:
    raise ValueError(f'images must be uint8; got {images.dtype}.')
  if steps < 1 or batch_size < 1 or save_every < 0:
    raise ValueError(f'steps and batch_size must be >= 1 and save_every >= 0; got {steps}, '
                     f'{batch_size}, {save_every}.')
  if states is not None:
    states = np.asarray(states)
    if states.ndim != 2 or states.shape[0] != images.shape[0]:
      raise ValueError(f'states must be (M, S) with M = {images.shape[0]} (one per image); '
                       f'got {states.shape}.')
    if state_weight < 0:
      raise ValueError(f'state_weight must be >= 0; got {state_weight}.')
  if feature_weights is not None:
    if states is None:
      raise ValueError('feature_weights weigh the state readout: pass states too.')
    feature_weights = np.asarray(feature_weights, np.float32)
    if feature_weights.shape != states.shape[1:]:
      raise ValueError(f'feature_weights must be ({states.shape[1]},), one per state dimension; '
                       f'got {feature_weights.shape}.')
    if not np.all(np.isfinite(feature_weights)) or np.any(feature_weights < 0):
      raise ValueError(f'feature_weights must be finite and >= 0; got {feature_weights}.')
  head = None if states is None else StateHead(states.shape[1])
  init_key, data_key = jax.random.split(key)

  @jax.jit
  def init(k):
    k_ae, k_head = jax.random.split(k)
    p = {'autoencoder': module.init(k_ae, images[:1], method='autoencode')['params']}
    if head is not None:
      p['head'] = head.init(k_head, jnp.zeros((1, module.grid**2, module.token_dim)))['params']
    return p

  params = init(init_key)
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
  opt_state = tx.init(params)
  data = {'pixels': jnp.asarray(images)}
  if states is not None:
    data['states'] = jnp.asarray(normalise_states(states))
  probe = jax.tree.map(lambda x: x[:256], data)
  loss_fn = lambda p, b: pretraining_loss(module, head, p, b['pixels'], b.get('states'),
                                          foreground_share, state_weight, feature_weights)

  @jax.jit
  def train_step(params, opt_state, data, k):
    # One jitted step per call: convolutions inside a `lax.scan` ran ~50x slower on XLA:CPU.
    idx = jax.random.randint(k, (batch_size,), 0, data['pixels'].shape[0])
    batch = jax.tree.map(lambda x: x[idx], data)
    grads, m = jax.grad(loss_fn, has_aux=True)(params, batch)
    # The token standardisation is not learned; it is set from the frames after training.
    grads['autoencoder'] = dict(grads['autoencoder'], token_mean=jnp.zeros_like(
        grads['autoencoder']['token_mean']), token_scale=jnp.zeros_like(
            grads['autoencoder']['token_scale']))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, m['loss']

  evaluate = jax.jit(lambda p, b: loss_fn(p, b)[1])
  metrics = {f'initial_{k}': np.asarray(v) for k, v in evaluate(params, probe).items()}
  start, losses = 0, []
  if resume_file is not None:
    settings = _resume_settings(images, config, key, steps, batch_size, learning_rate,
                                foreground_share, states, state_weight, feature_weights)
    resumed = _load_resume(resume_file, settings, (params, opt_state))
    if resumed is not None:
      start, (params, opt_state), losses = resumed
  keys = jax.random.split(data_key, steps)
  with tqdm.tqdm(total=steps, initial=start, desc='conv autoencoder',
                 disable=not progress) as bar:
    for i in range(start, steps):
      params, opt_state, loss = train_step(params, opt_state, data, keys[i])
      losses.append(loss)
      if (resume_file is not None and write_resume and save_every and (i + 1) % save_every == 0
          and i + 1 < steps):
        _save_resume(resume_file, settings, i + 1, (params, opt_state), losses)
      if (i + 1) % log_every == 0 or i + 1 == steps:
        bar.update(i + 1 - bar.n)
        bar.set_postfix(loss=float(loss))
  metrics.update({f'final_{k}': np.asarray(v) for k, v in evaluate(params, probe).items()})
  params['autoencoder'] = standardise_tokens(module, params['autoencoder'], images)  # Head dropped.
  metrics['loss'] = np.asarray(jnp.stack(losses))
  metrics['resumed_from_step'] = np.asarray(start)
  return params['autoencoder'], metrics


def _digest(x: np.ndarray | None) -> str | None:
  if x is None:
    return None
  x = np.ascontiguousarray(x)
  return hashlib.sha256(repr((x.shape, x.dtype.str)).encode() + x.tobytes()).hexdigest()[:16]


def _resume_settings(images, config, key, steps, batch_size, learning_rate, foreground_share,
                    states, state_weight, feature_weights) -> dict[str, Any]:
  """What a resumable pretraining state must have been written with (JSON-able)."""
  return {'images': _digest(images), 'states': _digest(states),
          'feature_weights': _digest(feature_weights),
          'key': _digest(np.asarray(jax.random.key_data(key))),
          'config': json.loads(json.dumps(dict(config), default=str)),
          'steps': int(steps), 'batch_size': int(batch_size),
          'learning_rate': float(learning_rate), 'foreground_share': float(foreground_share),
          'state_weight': float(state_weight)}


def _save_resume(path: str, settings: Mapping[str, Any], step: int, state: Any,
                 losses: list[jax.Array]) -> None:
  payload = {'settings': json.dumps(settings, sort_keys=True), 'step': step,
             'state': serialization.to_state_dict(jax.device_get(state)),
             'losses': np.asarray(jnp.stack(losses), np.float32)}
  io.write_bytes(path, serialization.msgpack_serialize(payload))


def _load_resume(path: str, settings: Mapping[str, Any], target: Any):
  """(step, state, losses) from `path`, or None when there is nothing usable to resume."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, 'rb') as f:
      payload = serialization.msgpack_restore(f.read())
    stored = json.loads(payload['settings'])
    step, losses = int(payload['step']), np.asarray(payload['losses'])
    state = serialization.from_state_dict(target, payload['state'])
    if losses.shape != (step,):
      raise ValueError(f'{losses.shape[0]} losses for step {step}')
  except Exception as e:  # Truncated, not msgpack, or another structure: unreadable.
    into = os.path.join(os.path.dirname(os.path.abspath(path)), 'corrupt')
    os.makedirs(into, exist_ok=True)
    moved = shutil.move(path, os.path.join(into, os.path.basename(path)))
    warnings.warn(f'Could not read the encoder pretraining state {path} ({type(e).__name__}: '
                  f'{e}); moved it to {moved} and pretraining from step 0.')
    return None
  changed = sorted(k for k in set(stored) | set(settings)
                   if stored.get(k) != json.loads(json.dumps(settings.get(k))))
  if changed:
    raise ValueError(
        f'The encoder pretraining state {path} (step {step}) was written with other '
        f'{", ".join(changed)} than this run. Run with the settings it was written with to '
        f'resume it, or move the file away to pretrain from step 0.')
  return step, state, [jnp.asarray(l) for l in losses]


def standardise_tokens(module: ConvAutoencoder, params: Any, images: np.ndarray,
                       max_images: int = 2048, chunk: int = 256) -> dict[str, Any]:
  """Sets 'token_mean' / 'token_scale' so the tokens of `images` have zero mean per entry and unit
  variance averaged over the entries (one global scale keeps the latent's geometry).

  images: (M, H, W, 3) uint8 (at most `max_images`, evenly strided, are used). Returns the
  updated params.
  """
  params = dict(params, token_mean=jnp.zeros_like(params['token_mean']),
                token_scale=jnp.ones_like(params['token_scale']))
  encode = jax.jit(lambda p, x: module.apply({'params': p}, x))
  images = images[::-(-len(images) // max_images)]
  tokens = np.concatenate([np.asarray(encode(params, images[i:i + chunk]), np.float64)
                           for i in range(0, len(images), chunk)])  # (M, h*w, Dv).
  mean = tokens.mean(axis=0)
  std = np.sqrt(tokens.var(axis=0).mean())
  return dict(params, token_mean=jnp.asarray(mean, jnp.float32),
              token_scale=jnp.asarray(1.0 / max(std, 1e-8), jnp.float32))
