"""Planning objectives on latents (PAPER.md section 3).

A latent for one frame is {'visual': (N, Dv), 'proprio': (Dp,)}; a latent trajectory has a leading
time axis, (T+1, N, Dv) and (T+1, Dp), frame 0 being the observed start z0.

  `last`: d(z_T, z_goal) with d = MSE over visual + alpha * MSE over proprio.
  `all`:  mean_t c_t d(z_t, z_goal), c_t = base^t / sum_s base^s, t = 0..T.

For `all` the time index runs over every frame of the trajectory INCLUDING z0 (t = 0..T), as the
paper states and as the authors' code computes it: the weighted per-frame distances are then
averaged over the T+1 frames, i.e. the cost is sum_t c_t d_t / (T+1). The t = 0 term does not
depend on the actions (it shifts the reported cost, not the gradient), and the 1 / (T+1) factor sets
the gradient scale that the paper's GD learning rate (1.0) was tuned for.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from wmjax.types import Cost, Latent, Params

MODES = ('last', 'all')
ROLLOUTS = ('markov', 'history')
_KEYS = ('visual', 'proprio')


def _check_latent(z: Latent, name: str, time_axis: bool) -> None:
  if not hasattr(z, 'keys') or set(z.keys()) != set(_KEYS):
    got = sorted(z.keys()) if hasattr(z, 'keys') else type(z).__name__
    raise ValueError(f"{name} must be a dict with keys {list(_KEYS)}; got {got}.")
  want = (3, 2) if time_axis else (2, 1)
  shapes = {k: jnp.shape(z[k]) for k in _KEYS}
  if (len(shapes['visual']), len(shapes['proprio'])) != want:
    layout = ("{'visual': (T+1, N, Dv), 'proprio': (T+1, Dp)}" if time_axis
              else "{'visual': (N, Dv), 'proprio': (Dp,)}")
    raise ValueError(f'{name} must have shapes {layout}; got {shapes}.')
  if time_axis and shapes['visual'][0] != shapes['proprio'][0]:
    raise ValueError(f'{name} visual and proprio disagree on the time axis: {shapes}.')


def _check_match(z: Latent, z_goal: Latent, name: str, skip_leading: bool) -> None:
  for k in _KEYS:
    a = jnp.shape(z[k])[1:] if skip_leading else jnp.shape(z[k])
    if a != jnp.shape(z_goal[k]):
      raise ValueError(
          f"{name}['{k}'] frame shape {a} does not match z_goal['{k}'] {jnp.shape(z_goal[k])}.")


def latent_distance(z: Latent, z_goal: Latent, alpha) -> jax.Array:
  """MSE over visual + alpha * MSE over proprio, for one frame.

  Args:
    z: {'visual': (N, Dv), 'proprio': (Dp,)}.
    z_goal: same shapes.
    alpha: proprio weight (PAPER.md section 3: 1 for PushT and Wall, 0 for PointMaze).

  Returns:
    () distance.
  """
  _check_latent(z, 'z', time_axis=False)
  _check_latent(z_goal, 'z_goal', time_axis=False)
  _check_match(z, z_goal, 'z', skip_leading=False)
  visual = jnp.mean(jnp.square(z['visual'] - z_goal['visual']))
  proprio = jnp.mean(jnp.square(z['proprio'] - z_goal['proprio']))
  return visual + alpha * proprio


def trajectory_weights(num_frames: int, base=0.5) -> jax.Array:
  """(num_frames,) weights c_t = base^t / sum_s base^s, t = 0..num_frames-1 (sum to 1)."""
  w = jnp.power(jnp.asarray(base, jnp.float32), jnp.arange(num_frames, dtype=jnp.float32))
  return w / jnp.sum(w)


def trajectory_cost(z_traj: Latent, z_goal: Latent, mode: str = 'last', alpha=1.0,
                    base=0.5) -> jax.Array:
  """Goal cost of a latent trajectory (PAPER.md section 3).

  Args:
    z_traj: {'visual': (T+1, N, Dv), 'proprio': (T+1, Dp)}, frame 0 = z0.
    z_goal: {'visual': (N, Dv), 'proprio': (Dp,)}.
    mode: 'last' (distance of the final frame) or 'all' (mean over t = 0..T of c_t * d_t).
    alpha: proprio weight.
    base: decay of the 'all' weights (paper: 0.5); unused for 'last'.

  Returns:
    () cost.
  """
  if mode not in MODES:
    raise ValueError(f'Unknown objective mode {mode!r}; choose one of {MODES}.')
  _check_latent(z_traj, 'z_traj', time_axis=True)
  _check_latent(z_goal, 'z_goal', time_axis=False)
  _check_match(z_traj, z_goal, 'z_traj', skip_leading=True)
  if mode == 'last':
    return latent_distance(jax.tree.map(lambda x: x[-1], z_traj), z_goal, alpha)
  d = jax.vmap(latent_distance, in_axes=(0, None, None))(z_traj, z_goal, alpha)  # (T+1,)
  # Section 3, objective `all`: c_t = base^t / sum_s base^s over t = 0..T, then averaged.
  return jnp.mean(trajectory_weights(d.shape[0], base) * d)


def world_model_cost(
    model: Any,
    params: Params,
    z0: Latent,
    z_goal: Latent,
    *,
    mode: str = 'last',
    alpha=1.0,
    base=0.5,
    rollout: str = 'markov',
    horizon: Optional[int] = None,
    action_size: Optional[int] = None,
    action_low=None,
    action_high=None,
) -> Cost:
  """The planning cost of an action sequence under a world model.

  `model` is anything with `model.rollout(params, z0, actions (H, A), mode=rollout) -> Latent`
  whose leaves have a leading H+1 axis starting at z0 (a `wmjax.models` WorldModel, or any object
  with that method).

  Args:
    model: object with a `rollout` method as above.
    params: model parameters (closed over; no gradient is taken with respect to them).
    z0: {'visual': (N, Dv), 'proprio': (Dp,)} encoded start frame.
    z_goal: same shapes, encoded goal.
    mode: objective, 'last' or 'all'.
    alpha: proprio weight.
    base: decay of the 'all' weights.
    rollout: 'markov' (one-frame rollout, the paper's GBP) or 'history' (DINO-WM window).
    horizon, action_size: when given, actions must have shape (horizon, action_size); checked at
      trace time with a ValueError.
    action_low, action_high: when given, actions are clipped into these bounds before the rollout
      (the gradient is zero outside them; prefer the planners' projection to keep iterates inside).

  Returns:
    `cost(actions (H, A)) -> ()`.
  """
  if mode not in MODES:
    raise ValueError(f'Unknown objective mode {mode!r}; choose one of {MODES}.')
  if rollout not in ROLLOUTS:
    raise ValueError(f'Unknown rollout {rollout!r}; choose one of {ROLLOUTS}.')
  if not callable(getattr(model, 'rollout', None)):
    raise ValueError(
        'model must have a rollout(params, z0, actions, mode) method (a wmjax.models WorldModel).')
  if (action_low is None) != (action_high is None):
    raise ValueError('Give both action_low and action_high, or neither (got only one).')
  _check_latent(z0, 'z0', time_axis=False)
  _check_latent(z_goal, 'z_goal', time_axis=False)
  _check_match(z0, z_goal, 'z0', skip_leading=False)

  def cost(actions: jax.Array) -> jax.Array:
    shape = jnp.shape(actions)
    if len(shape) != 2:
      raise ValueError(f'actions must be (H, A) for one instance; got shape {shape}.')
    if horizon is not None and shape[0] != horizon:
      raise ValueError(f'actions have horizon {shape[0]}; expected {horizon} (shape {shape}).')
    if action_size is not None and shape[1] != action_size:
      raise ValueError(
          f'actions have size {shape[1]}; expected {action_size} (shape {shape}).')
    if action_low is not None:
      actions = jnp.clip(actions, action_low, action_high)
    z_traj = model.rollout(params, z0, actions, mode=rollout)
    n = jnp.shape(z_traj['visual'])[0] if 'visual' in z_traj else None
    if n != shape[0] + 1:
      raise ValueError(
          f'model.rollout must return latents with a leading axis H+1 = {shape[0] + 1} '
          f'(z0 then one frame per action); got {n}.')
    return trajectory_cost(z_traj, z_goal, mode=mode, alpha=alpha, base=base)

  return cost
