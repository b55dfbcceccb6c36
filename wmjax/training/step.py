"""Training and evaluation step factories (pure, jittable)."""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from wmjax.training.optim import learning_rates
from wmjax.training.train_state import TrainState
from wmjax.types import Metrics, PRNGKey

Batch = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, Metrics]]


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                    stateful: bool = False, guard_nonfinite: bool = True
                    ) -> Callable[[TrainState, Batch, PRNGKey], tuple[TrainState, Metrics]]:
  """Builds `step(state, batch, key) -> (state, metrics)`.

  Args:
    loss_fn: `loss_fn(params, frozen, batch, key) -> (loss (), metrics)`; differentiated with
      respect to `params` only, so the frozen groups never change. With `stateful=True`:
      `loss_fn(params, frozen, batch, key, extra) -> (loss (), (metrics, new_extra))`, where
      `extra` is `state.extra` (explicit state of a loss wrapper, e.g. adversarial radii) and
      `new_extra` is stored in the returned state.
    optimizer: transformation of `state.params` (the one `state.opt_state` was built with).
    stateful: whether `loss_fn` reads and returns `state.extra`.
    guard_nonfinite: a step whose loss or gradient norm is NaN or infinite (or whose update
      would make a parameter non-finite) returns the state unchanged, step count included, and
      reports metrics['nonfinite'] = 1; the caller decides whether to stop (the training binaries
      do, at the first such step, so nothing non-finite is ever saved).

  Returns:
    A pure function; jit it (and donate `state`, argument 0) in the caller. Metrics: the loss
    function's metrics plus 'grad_norm', 'param_norm', 'lr/<group>' (learning rates used) and,
    with `guard_nonfinite`, 'nonfinite' (() int32, 1 if the step was refused).
  """

  def step(state: TrainState, batch: Batch, key: PRNGKey) -> tuple[TrainState, Metrics]:
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if stateful:
      (loss, (metrics, extra)), grads = grad_fn(state.params, state.frozen, batch, key,
                                                state.extra)
    else:
      (loss, metrics), grads = grad_fn(state.params, state.frozen, batch, key)
      extra = state.extra
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics['grad_norm'] = optax.global_norm(grads)
    metrics['param_norm'] = optax.global_norm(params)
    metrics.update(learning_rates(opt_state))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              extra=extra)
    if guard_nonfinite:
      ok = (jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
            & jnp.isfinite(metrics['param_norm']))
      new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
      metrics['nonfinite'] = (~ok).astype(jnp.int32)
    return new_state, metrics

  return step


def make_eval_step(loss_fn: LossFn, *, stateful: bool = False
                   ) -> Callable[[TrainState, Batch, PRNGKey], Metrics]:
  """Builds `eval_step(state, batch, key) -> metrics` (the loss function's metrics, no update).

  Pass a deterministic loss (e.g. `teacher_forcing_loss(model, deterministic=True)`). With
  `stateful=True` the loss is `loss_fn(params, frozen, batch, key, extra) -> (loss, (metrics,
  new_extra))`; it gets `state.extra` and its `new_extra` is dropped (evaluation changes nothing).
  """

  def eval_step(state: TrainState, batch: Batch, key: PRNGKey) -> Metrics:
    if stateful:
      _, (metrics, _) = loss_fn(state.params, state.frozen, batch, key, state.extra)
    else:
      _, metrics = loss_fn(state.params, state.frozen, batch, key)
    return dict(metrics)

  return eval_step
