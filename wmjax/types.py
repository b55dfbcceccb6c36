"""Type aliases and protocols shared across wmjax."""

from typing import Any, Callable, Mapping, Protocol

import jax

PRNGKey = jax.Array
Params = Any  # A pytree of arrays.
Metrics = Mapping[str, jax.Array]
# A latent state: {'visual': (N, Dv), 'proprio': (Dp,)} for one frame.
Latent = Mapping[str, jax.Array]


class Cost(Protocol):
  """Cost of one action sequence: `cost(actions (H, A)) -> scalar`."""

  def __call__(self, actions: jax.Array) -> jax.Array:
    ...


LossFn = Callable[..., tuple[jax.Array, Metrics]]
