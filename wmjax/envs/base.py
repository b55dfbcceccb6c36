"""The environment contract (Brax / MuJoCo Playground style).

An environment is written for ONE instance; batching is `jax.vmap`. All methods are
pure functions of their arguments (the `Env` object only holds static configuration),
so they can be jitted, vmapped and scanned.

Every task exposes:
  * a low-dimensional state vector (`state_vector`, shape (S,)) that fully determines
    the rendered image, and `reset_to(state_vector)` to restart the simulator from it;
  * a proprio vector (`proprio`, shape (P,)), as in DINO-WM;
  * `render(state_vector, size)` -> (size, size, 3) float32 RGB in [0, 1], a pure JAX
    rasteriser usable inside jit/vmap;
  * `success(state_vector, goal_state_vector)` and `distance(...)`;
  * `sample_problem(key)` -> (initial state vector, goal state vector);
  * raw action bounds (`action_low`, `action_high`, shape (A,): the behaviour data's range
    and what bounded planners and `clip_actions=True` use) and nominal action
    normalisation statistics (`action_mean`, `action_std`).
"""

import abc
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class State:
  """Environment state for one instance.

  Attributes:
    data: simulator state (an `mjx.Data` or a small task-specific pytree).
    obs: {'state': (S,), 'proprio': (P,)} (+ 'pixels': (H, W, 3) uint8 with a pixel wrapper).
    reward: () negative distance to the goal if one is set, else 0. The raw tasks hold no
      goal (MPC and the planners score states against a goal they are given), so theirs is 0;
      `wmjax.envs.brax_compat.BraxEnv` keeps a goal in `info['goal']` and sets it.
    done: () float, 1.0 once the episode should stop (never set by the raw tasks).
    metrics: dict of () arrays.
    info: dict of task-specific pytrees (e.g. the current goal).
  """

  data: Any
  obs: dict[str, jax.Array]
  reward: jax.Array
  done: jax.Array
  metrics: dict[str, jax.Array] = struct.field(default_factory=dict)
  info: dict[str, Any] = struct.field(default_factory=dict)


class Env(abc.ABC):
  """Base class of a task. Holds static configuration only."""

  name: str = ''
  state_size: int = 0    # S
  proprio_size: int = 0  # P
  action_size: int = 0   # A (raw action, before frameskip)
  dt: float = 0.0        # seconds per env step (one raw action)

  @abc.abstractmethod
  def reset(self, key: jax.Array) -> State:
    """Random initial state (the behaviour-data start distribution)."""

  @abc.abstractmethod
  def reset_to(self, state_vector: jax.Array) -> State:
    """State whose `state_vector` equals the given (S,) vector (velocities zero if absent)."""

  @abc.abstractmethod
  def step(self, state: State, action: jax.Array) -> State:
    """One env step with a raw action (A,).

    Actions are executed as the task's reference executes them: Wall and PushT unclipped
    (their `clip_actions=True` option clips to the bounds), PointMaze clipped to [-1, 1].
    """

  @abc.abstractmethod
  def state_vector(self, state: State) -> jax.Array:
    """(S,) low-dimensional state."""

  @abc.abstractmethod
  def proprio(self, state: State) -> jax.Array:
    """(P,) proprioceptive vector."""

  @abc.abstractmethod
  def render(self, state_vector: jax.Array, size: int = 64) -> jax.Array:
    """(size, size, 3) float32 RGB in [0, 1] from an (S,) state vector."""

  @abc.abstractmethod
  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    """() bool: the task's success test between two (S,) state vectors."""

  @abc.abstractmethod
  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    """() float: the task's distance between two (S,) state vectors."""

  @abc.abstractmethod
  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(initial (S,), goal (S,)) state vectors of one evaluation instance."""

  @property
  @abc.abstractmethod
  def action_low(self) -> jax.Array:
    """(A,) lower bound of raw actions."""

  @property
  @abc.abstractmethod
  def action_high(self) -> jax.Array:
    """(A,) upper bound of raw actions."""

  @property
  def action_mean(self) -> jax.Array:
    """(A,) nominal mean of raw behaviour actions (datasets store measured ones)."""
    return jnp.zeros((self.action_size,))

  @property
  def action_std(self) -> jax.Array:
    """(A,) nominal std of raw behaviour actions (datasets store measured ones)."""
    return jnp.ones((self.action_size,))

  def check_action(self, action: jax.Array) -> None:
    """Raises ValueError if `action` does not have shape (A,). Trace-time check."""
    if action.shape != (self.action_size,):
      raise ValueError(
          f'{self.name}: action must have shape ({self.action_size},), got {action.shape}.')


class Policy(NamedTuple):
  """A behaviour policy for ONE instance: `init(key, env_state) -> pstate`,
  `act(pstate, env_state, key) -> (raw_action (A,), pstate)` (`wmjax.data.policies` has the
  registry)."""

  init: Callable[[jax.Array, State], Any]
  act: Callable[[Any, State, jax.Array], tuple[jax.Array, Any]]
