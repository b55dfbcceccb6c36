"""Teacher-forcing loss of the world model (PAPER.md section 2) and held-out prediction errors.

The loss is factored in two halves so that a wrapper can perturb the predictor inputs between them
(adversarial world modelling, PAPER.md section 4, perturbs the visual latent, the proprio embedding
and the action embedding of the history frames, and keeps the clean targets):

  inputs, targets = encode_window(model, params, frozen, batch)  # Frozen encoder, no target grad.
  loss, metrics = predict_loss(model, params, inputs, targets, key)

`teacher_forcing_loss(model)` composes the two into `loss_fn(params, frozen, batch, key)`, the
signature `wmjax.training.make_train_step` expects. An optional `Readout` adds the error of the
prediction as a linear probe reads it (state features from the visual latent): a way to make the
predictor get right what the probe says planning needs (e.g. PushT's block angle) even where it
moves the tokens little. `params` are the trainable parameters (proprio
encoder, action encoder, predictor) and `frozen` the frozen ones ({'encoder': ...}); the model sees
`{**params, **frozen}`.
"""

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from wmjax.types import Metrics, Params, PRNGKey


class PredictorInputs(NamedTuple):
  """Predictor inputs of a batch of windows (frames 0..T-1, T = num_hist).

  Attributes:
    visual: (B, T, N, Dv) frozen-encoder latents.
    proprio: (B, T, Ep) proprio embeddings.
    actions: (B, T, Ea) action embeddings (action t leads from frame t to t+1).
  """
  visual: jax.Array
  proprio: jax.Array
  actions: jax.Array


class Targets(NamedTuple):
  """Encoded frames 1..T, the predictor's targets (gradient stopped).

  Attributes:
    visual: (B, T, N, Dv).
    proprio: (B, T, Ep).
  """
  visual: jax.Array
  proprio: jax.Array


class Readout(NamedTuple):
  """A linear read-out of state features from the visual latent, scored in the predictor's loss.

  Attributes:
    matrix: (N * Dv, F): the change of F state features (in their training standard deviations)
      per change of the flattened visual latent (`wmjax.training.probe.probe_matrix`).
    weights: (F,) >= 0, each feature's weight in the read-out error.
    weight: the read-out error's weight beside the latent MSE.
  """
  matrix: jax.Array
  weights: jax.Array
  weight: float


def readout_error(pred_visual: jax.Array, target_visual: jax.Array, readout: Readout) -> jax.Array:
  """() weighted mean over features of the squared read-out difference, averaged over the
  leading axes. pred_visual, target_visual: (..., N, Dv)."""
  diff = (pred_visual - target_visual).reshape(*pred_visual.shape[:-2], -1) @ readout.matrix
  per_feature = jnp.mean(jnp.square(diff), axis=tuple(range(diff.ndim - 1)))
  return jnp.sum(per_feature * readout.weights) / jnp.sum(readout.weights)


def merge_params(params: Params, frozen: Params) -> Params:
  """The model's full parameter dict: trainable entries plus frozen ones (e.g. 'encoder')."""
  overlap = set(params) & set(frozen)
  if overlap:
    raise ValueError(f'Parameter groups {sorted(overlap)} are both trainable and frozen.')
  return {**params, **frozen}


def _observations(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {k: batch[k] for k in ('pixels', 'proprio', 'state') if k in batch}


def encode_window(model: Any, params: Params, frozen: Params,
                  batch: dict[str, jax.Array]) -> tuple[PredictorInputs, Targets]:
  """Encodes a batch of windows into predictor inputs and targets.

  Args:
    model: a `WorldModel`.
    params: trainable parameters ('proprio_encoder', 'action_encoder', 'predictor').
    frozen: frozen parameters ({'encoder': ...}).
    batch: {'pixels': (B, T+1, H, W, 3) uint8, 'proprio': (B, T+1, P), 'state': (B, T+1, S),
      'actions': (B, T, fs*A) normalised}; with 'visual' (B, T+1, N, Dv), the frozen encoder's
      tokens computed beforehand (`wmjax.training.token_cache`), the encoder is not run.

  Returns:
    (inputs, targets): inputs hold frames 0..T-1 and actions 0..T-1, targets frames 1..T.
  """
  if 'actions' not in batch:
    raise ValueError(f'batch needs an "actions" entry; got keys {sorted(batch)}.')
  num_frames = batch['proprio'].shape[1]
  num_actions = batch['actions'].shape[1]
  if num_frames != num_actions + 1:
    raise ValueError(
        f'A window of T actions needs T+1 frames; got {num_frames} frames and {num_actions} '
        'actions.')
  full = merge_params(params, frozen)
  if 'visual' in batch:
    visual, proprio = batch['visual'], model.encode_proprio(full, batch['proprio'])
  else:
    z = model.encode(full, _observations(batch))
    visual, proprio = z['visual'], z['proprio']
  # The encoder is frozen (PAPER.md section 2): no gradient reaches it.
  visual = jax.lax.stop_gradient(visual)
  inputs = PredictorInputs(
      visual=visual[:, :-1], proprio=proprio[:, :-1],
      actions=model.embed_actions(full, batch['actions']))
  # Targets are detached, as in DINO-WM (PAPER.md section 2: targets from the frozen encoder).
  targets = Targets(visual=visual[:, 1:], proprio=jax.lax.stop_gradient(proprio[:, 1:]))
  return inputs, targets


def latent_errors(pred_visual: jax.Array, pred_proprio: jax.Array, target_visual: jax.Array,
                  target_proprio: jax.Array) -> dict[str, jax.Array]:
  """MSEs per channel group and their combination over the visual + proprio channels.

  DINO-WM takes one MSE over each token's concatenated visual + proprio features (the proprio
  embedding is tiled onto every patch, action channels excluded), which equals the per-group MSEs
  weighted by their feature counts: (Dv * mse_visual + Ep * mse_proprio) / (Dv + Ep).

  Args:
    pred_visual, target_visual: (..., N, Dv).
    pred_proprio, target_proprio: (..., Ep).

  Returns:
    {'loss', 'mse_visual', 'mse_proprio'}: () each.
  """
  mse_visual = jnp.mean(jnp.square(pred_visual - target_visual))
  mse_proprio = jnp.mean(jnp.square(pred_proprio - target_proprio))
  dv, ep = pred_visual.shape[-1], pred_proprio.shape[-1]
  loss = (dv * mse_visual + ep * mse_proprio) / (dv + ep)
  return {'loss': loss, 'mse_visual': mse_visual, 'mse_proprio': mse_proprio}


def predict_loss(model: Any, params: Params, inputs: PredictorInputs, targets: Targets,
                 key: PRNGKey, *, deterministic: bool = False,
                 readout: Readout | None = None) -> tuple[jax.Array, Metrics]:
  """Predicts frames 1..T from (possibly perturbed) inputs and scores them against the targets.

  Args:
    model: a `WorldModel`.
    params: parameters holding at least 'predictor' (the encoders are not used here).
    inputs: `PredictorInputs` with leading (B, T).
    targets: `Targets` with leading (B, T).
    key: dropout key.
    deterministic: disables dropout (evaluation).
    readout: adds readout.weight x `readout_error` to the loss (None: the paper's loss).

  Returns:
    (loss, metrics): loss () over the visual + proprio channels of all T outputs (PAPER.md
    section 2), plus the read-out term; metrics {'loss', 'mse_visual', 'mse_proprio'} (and
    'readout_mse'); metrics['loss'] is the latent MSE alone.
  """
  # Output t predicts frame t+1; frame-causal attention (PAPER.md section 2).
  pred = model.predict_embedded(params, inputs.visual, inputs.proprio, inputs.actions, rng=key,
                                deterministic=deterministic)
  metrics = latent_errors(pred['visual'], pred['proprio'], targets.visual, targets.proprio)
  if readout is None:
    return metrics['loss'], metrics
  metrics['readout_mse'] = readout_error(pred['visual'], targets.visual, readout)
  return metrics['loss'] + readout.weight * metrics['readout_mse'], metrics


LossFn = Callable[[Params, Params, dict[str, jax.Array], PRNGKey], tuple[jax.Array, Metrics]]


def teacher_forcing_loss(model: Any, *, deterministic: bool = False,
                         readout: Readout | None = None) -> LossFn:
  """The world-model training loss (PAPER.md section 2).

  Args:
    model: a `WorldModel`.
    deterministic: True for evaluation (no dropout).
    readout: an optional read-out term (`predict_loss`).

  Returns:
    loss_fn(params, frozen, batch, key) -> (loss (), metrics): encodes the num_hist+1 frames of each
    window with the frozen encoder, predicts frames 1..num_hist from frames 0..num_hist-1 (teacher
    forcing, dropout on unless deterministic) and returns the MSE over visual + proprio channels.
  """

  def loss_fn(params, frozen, batch, key):
    inputs, targets = encode_window(model, params, frozen, batch)
    return predict_loss(model, params, inputs, targets, key, deterministic=deterministic,
                        readout=readout)

  return loss_fn


def _per_step_errors(pred: Mapping[str, jax.Array], target: Mapping[str, jax.Array]
                     ) -> dict[str, jax.Array]:
  """Errors per rollout step. pred, target: Latents with leading (B, K); returns (K,) arrays."""
  mse_visual = jnp.mean(jnp.square(pred['visual'] - target['visual']), axis=(0, 2, 3))
  mse_proprio = jnp.mean(jnp.square(pred['proprio'] - target['proprio']), axis=(0, 2))
  dv, ep = pred['visual'].shape[-1], pred['proprio'].shape[-1]
  loss = (dv * mse_visual + ep * mse_proprio) / (dv + ep)
  return {'loss': loss, 'mse_visual': mse_visual, 'mse_proprio': mse_proprio}


def rollout_errors(model: Any, params: Params, batch: dict[str, jax.Array], *,
                   mode: str) -> dict[str, dict[str, jax.Array]]:
  """Open-loop latent prediction errors against encoded ground truth, and the no-change baseline.

  Each window's frame 0 is encoded and rolled out open loop with the window's H actions
  (`model.rollout`, 'history' or 'markov'); prediction k is compared with the encoded frame k.
  The baseline predicts no change (z_k = z_0).

  Args:
    model: a `WorldModel`.
    params: full parameters (encoder included).
    batch: a window batch with H+1 frames and actions (B, H, fs*A).
    mode: rollout mode ('history' | 'markov').

  Returns:
    {'model': errors, 'no_change': errors}, errors {'loss', 'mse_visual', 'mse_proprio'} of shape
    (H,), entry k-1 for k steps ahead, averaged over the batch; 'loss' combines the visual and
    proprio channels as the training loss does.
  """
  z = model.encode(params, _observations(batch))  # (B, H+1, ...)
  z0 = jax.tree.map(lambda x: x[:, 0], z)
  pred = jax.vmap(lambda z0, a: model.rollout(params, z0, a, mode))(z0, batch['actions'])
  future = jax.tree.map(lambda x: x[:, 1:], z)
  still = jax.tree.map(lambda x: jnp.broadcast_to(x[:, :1], x[:, 1:].shape), z)
  return {'model': _per_step_errors(jax.tree.map(lambda x: x[:, 1:], pred), future),
          'no_change': _per_step_errors(still, future)}
