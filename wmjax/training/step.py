"""Training and evaluation step factories (pure, jittable)."""

from typing import Callable

import jax
import optax

from wmjax.training.optim import learning_rates
from wmjax.training.train_state import TrainState
from wmjax.types import Metrics, PRNGKey

Batch = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, Metrics]]


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation
                    ) -> Callable[[TrainState, Batch, PRNGKey], tuple[TrainState, Metrics]]:
  """Builds `step(state, batch, key) -> (state, metrics)`.

  Args:
    loss_fn: `loss_fn(params, frozen, batch, key) -> (loss (), metrics)`; differentiated with
      respect to `params` only, so the frozen groups never change.
    optimizer: transformation of `state.params` (the one `state.opt_state` was built with).

  Returns:
    A pure function; jit it (and donate `state`, argument 0) in the caller. Metrics: the loss
    function's metrics plus 'grad_norm', 'param_norm' and 'lr/<group>' (learning rates used).
  """

  def step(state: TrainState, batch: Batch, key: PRNGKey) -> tuple[TrainState, Metrics]:
    grad_fn = jax.grad(loss_fn, has_aux=True)
    grads, metrics = grad_fn(state.params, state.frozen, batch, key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics['grad_norm'] = optax.global_norm(grads)
    metrics['param_norm'] = optax.global_norm(params)
    metrics.update(learning_rates(opt_state))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return step


def make_eval_step(loss_fn: LossFn) -> Callable[[TrainState, Batch, PRNGKey], Metrics]:
  """Builds `eval_step(state, batch, key) -> metrics` (the loss function's metrics, no update).

  Pass a deterministic loss (e.g. `teacher_forcing_loss(model, deterministic=True)`).
  """

  def eval_step(state: TrainState, batch: Batch, key: PRNGKey) -> Metrics:
    _, metrics = loss_fn(state.params, state.frozen, batch, key)
    return dict(metrics)

  return eval_step

