"""Training state of the world model: trainable and frozen parameters, optimiser state, step."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wmjax.types import Params

FROZEN_GROUPS = ('encoder',)  # The observation encoder is frozen (PAPER.md section 2).


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes; a pytree carried through jit.

  Attributes:
    step: () int32, optimiser steps taken.
    params: trainable parameters, e.g. {'proprio_encoder', 'action_encoder', 'predictor'}.
    frozen: frozen parameters, e.g. {'encoder': ...}; never updated by a training step.
    opt_state: optimiser state of `params`.
    extra: explicit state of loss wrappers (e.g. adversarial radii); {} for plain training.
  """
  step: jax.Array
  params: Params
  frozen: Params
  opt_state: optax.OptState
  extra: dict[str, Any] = struct.field(default_factory=dict)


def split_params(params: Params, frozen_groups: tuple[str, ...] = FROZEN_GROUPS
                 ) -> tuple[Params, Params]:
  """Splits the model's parameter dict into (trainable, frozen) by top-level key."""
  if not isinstance(params, dict):
    raise ValueError(f'Expected a dict of parameter groups, got {type(params).__name__}.')
  trainable = {k: v for k, v in params.items() if k not in frozen_groups}
  frozen = {k: v for k, v in params.items() if k in frozen_groups}
  return trainable, frozen


def create_train_state(params: Params, optimizer: optax.GradientTransformation, *,
                       frozen_groups: tuple[str, ...] = FROZEN_GROUPS,
                       extra: dict[str, Any] | None = None) -> TrainState:
  """Initial state from the model's full parameter dict (as returned by `model.init`).

  Args:
    params: {'encoder', 'proprio_encoder', 'action_encoder', 'predictor'} (any top-level groups).
    optimizer: transformation of the trainable groups.
    frozen_groups: top-level groups kept frozen.
    extra: initial explicit state of loss wrappers.
  """
  trainable, frozen = split_params(params, frozen_groups)
  return TrainState(step=jnp.zeros((), jnp.int32), params=trainable, frozen=frozen,
                    opt_state=optimizer.init(trainable), extra=dict(extra or {}))


def full_params(state: TrainState) -> Params:
  """The model's full parameter dict (trainable + frozen groups)."""
  return {**state.params, **state.frozen}
