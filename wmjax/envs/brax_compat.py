"""Brax interoperability, both ways (needs the `brax` extra: `pip install 'wmjax[brax]'`).

wmjax task -> Brax: `BraxEnv(wmjax.envs.load('wall'))` is a `brax.envs.Env`. `reset(rng)` samples
an evaluation problem and keeps its goal in `info['goal']`; `step` keeps every `info` and
`metrics` entry it is given (Brax's wrappers add their own), the reward is the negative task
distance to the goal, and `observation_size` is known from `jax.eval_shape`. It runs under Brax's
`VmapWrapper`, `EpisodeWrapper` and `AutoResetWrapper` (`brax.envs.training.wrap`) inside
`jit(lax.scan(...))`, so Brax's training agents can use our tasks.

Brax / MJX env -> wmjax: `FromBrax(brax_env, distance=...)` is a wmjax `Env` whose state vector
is the whole Brax `State` flattened (bit-exact), so `reset_to(state_vector)` restores a state and
`wmjax.planning.mpc.evaluate` runs any `Planner` against the env. `true_dynamics_problem` plans
through the env itself with a per-step cost (default: the negative reward):

    env = FromBrax(brax.envs.get_environment('reacher'),
                   distance=lambda s, goal: jnp.linalg.norm(s.obs[-3:]), success_threshold=0.02)
    problem = true_dynamics_problem(env)
    episodes = mpc.evaluate(env, planner, problem.observe, problem.make_cost, problem.normalizer,
                            *jax.vmap(env.sample_problem)(keys), episode_keys,
                            num_replans=20, execute=1, frameskip=1)

Gradient planners through an MJX-backed env need a solver `jax.grad` can differentiate: set
`opt.iterations = 1` (and a small `opt.ls_iterations`, e.g. 4) on the model, e.g.
`brax_env.sys = brax_env.sys.tree_replace({'opt.iterations': 1, 'opt.ls_iterations': 4})`; the
default solver loops with `lax.while_loop`, which reverse mode cannot differentiate.
"""

import math
from typing import Any, Callable, Optional, Sequence

from brax.envs import base as brax_base
import jax
import jax.numpy as jnp

from wmjax.envs import base
from wmjax.envs import execution
from wmjax.planning import problems
from wmjax.types import Cost

BraxState = brax_base.State
# (Brax state, goal Brax state) -> () float.
DistanceFn = Callable[[BraxState, BraxState], jax.Array]
# (Brax state after the step, raw action (A,), goal Brax state) -> () float.
StepCostFn = Callable[[BraxState, jax.Array, BraxState], jax.Array]


# ------------------------------------------------------------------------- wmjax -> Brax
class BraxEnv(brax_base.Env):
  """A wmjax task as a Brax env, for ONE instance (batch with Brax's `VmapWrapper`).

  State: `pipeline_state` is the task's own `wmjax.envs.State`; `obs` the `obs_keys` of its
  observation flattened and concatenated, then the goal state vector if `goal_in_obs` (one key
  and no goal: that observation as it is, e.g. (H, W, 3) pixels); `reward` minus the task
  distance to the goal; `done` 1.0 on success if `done_on_success`, else 0.0 (Brax's
  `EpisodeWrapper` ends episodes); `metrics` {'distance', 'success'}; `info` {'goal': (S,)}.

  Actions: with `rescale_actions`, a policy's actions in [-1, 1] map linearly onto the task's
  [action_low, action_high] (Brax agents squash with tanh); otherwise raw task actions.
  """

  def __init__(self, env: base.Env, *, obs_keys: Sequence[str] = ('state',),
               goal_in_obs: bool = True, done_on_success: bool = False,
               rescale_actions: bool = True):
    self.env = env
    self.obs_keys = tuple(obs_keys)
    self.goal_in_obs = bool(goal_in_obs)
    self.done_on_success = bool(done_on_success)
    self.rescale_actions = bool(rescale_actions)
    self.dt = env.dt

  def reset(self, rng: jax.Array) -> BraxState:
    """A random evaluation problem: start at its initial state, goal in info['goal']."""
    init, goal = self.env.sample_problem(rng)
    inner = self.env.reset_to(init)
    distance, success = self._progress(inner, goal)
    return BraxState(
        pipeline_state=inner, obs=self._obs(inner, goal), reward=-distance,
        done=jnp.zeros((), jnp.float32),
        metrics={'distance': distance, 'success': success},
        info={'goal': goal})

  def step(self, state: BraxState, action: jax.Array) -> BraxState:
    """One task step; info and metrics keep every key of `state`."""
    if self.rescale_actions:
      low, high = self.env.action_low, self.env.action_high
      action = low + (jnp.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
    goal = state.info['goal']
    inner = self.env.step(state.pipeline_state, action)
    distance, success = self._progress(inner, goal)
    done = success if self.done_on_success else jnp.zeros_like(state.done)
    return state.replace(
        pipeline_state=inner, obs=self._obs(inner, goal), reward=-distance,
        done=done.astype(state.done.dtype),
        metrics={**state.metrics, 'distance': distance, 'success': success})

  def _progress(self, inner: base.State, goal: jax.Array) -> tuple[jax.Array, jax.Array]:
    sv = self.env.state_vector(inner)
    return (self.env.distance(sv, goal).astype(jnp.float32),
            self.env.success(sv, goal).astype(jnp.float32))

  def _obs(self, inner: base.State, goal: jax.Array) -> jax.Array:
    parts = [inner.obs[k] for k in self.obs_keys]
    if len(parts) == 1 and not self.goal_in_obs:
      return parts[0]
    if self.goal_in_obs:
      parts.append(goal)
    return jnp.concatenate([jnp.ravel(p).astype(jnp.float32) for p in parts])

  @property
  def observation_size(self) -> Any:
    """Observation length (a tuple shape for an unflattened multi-axis observation)."""
    obs = jax.eval_shape(self.reset, jax.random.key(0)).obs
    return obs.shape[-1] if len(obs.shape) == 1 else tuple(obs.shape)

  @property
  def action_size(self) -> int:
    return int(self.env.action_size)

  @property
  def backend(self) -> str:
    return 'wmjax'

  def __repr__(self) -> str:
    return f'BraxEnv({self.env!r})'


# ------------------------------------------------------------------------- Brax -> wmjax
class _Flattener:
  """Bit-exact flattening of a fixed pytree structure into one float32 vector.

  float32 leaves are copied; other 4- and 8-byte dtypes (int32, uint32, key data, ...) are
  bitcast, so integer counters and PRNG keys survive the round trip; narrower dtypes (bool,
  int8, float16, bfloat16) are cast, which is exact.
  """

  def __init__(self, example_fn: Callable[[], Any]):
    impls = {}

    def probe():
      tree = example_fn()
      leaves = jax.tree.leaves(tree)
      for i, leaf in enumerate(leaves):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
          impls[i] = jax.random.key_impl(leaf)
      return tree, [jax.random.key_data(x) if i in impls else x for i, x in enumerate(leaves)]

    shapes, stored = jax.eval_shape(probe)
    self.leaves, self.treedef = jax.tree.flatten(shapes)
    self.impls = impls
    self.stored = stored  # What each leaf is stored as (key data for keys).
    self.sizes = [math.prod(s.shape) * (2 if s.dtype.itemsize == 8 else 1) for s in stored]
    self.size = sum(self.sizes)

  @staticmethod
  def _flat(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.float32:
      return x.reshape(-1)
    if x.dtype.itemsize in (4, 8):
      return jax.lax.bitcast_convert_type(x, jnp.float32).reshape(-1)
    return x.astype(jnp.float32).reshape(-1)

  def flatten(self, tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    out = []
    for i, leaf in enumerate(leaves):
      if i in self.impls:
        leaf = jax.random.key_data(leaf)
      out.append(self._flat(jnp.asarray(leaf)))
    return jnp.concatenate(out) if out else jnp.zeros((0,), jnp.float32)

  def unflatten(self, vector: jax.Array) -> Any:
    leaves, start = [], 0
    for i, (stored, size) in enumerate(zip(self.stored, self.sizes)):
      chunk = vector[start:start + size]
      start += size
      dtype, shape = stored.dtype, stored.shape
      if dtype == jnp.float32:
        leaf = chunk.reshape(shape)
      elif dtype.itemsize == 4:
        leaf = jax.lax.bitcast_convert_type(chunk, dtype).reshape(shape)
      elif dtype.itemsize == 8:
        leaf = jax.lax.bitcast_convert_type(chunk.reshape(-1, 2), dtype).reshape(shape)
      else:
        leaf = chunk.astype(dtype).reshape(shape)
      if i in self.impls:
        leaf = jax.random.wrap_key_data(leaf, impl=self.impls[i])
      leaves.append(leaf)
    return jax.tree.unflatten(self.treedef, leaves)


def negative_reward(state: BraxState, action: jax.Array, goal: BraxState) -> jax.Array:
  """The default step cost: minus the reward of the step that led to `state`."""
  del action, goal  # Unused.
  return -state.reward


class FromBrax(base.Env):
  """A Brax (or MuJoCo Playground, or any `reset(rng)` / `step(state, action)`) env as a wmjax
  task, for `wmjax.planning.mpc`.

  The state vector (S,) is the env's whole state pytree flattened bit-exactly (`state_size`
  from `jax.eval_shape`), and `reset_to(state_vector)` restores it, so MPC can restart the
  simulator and a cost can roll out from any observed state. There is no proprio (P = 0) and no
  renderer. The layout is probed with `env.reset(jax.random.key(0))`: give it typed keys too.

  Args:
    env: the Brax env (one instance, not vmapped).
    distance: (state, goal state) -> () the task distance that `mpc` reports (final and minimum
      distance); default minus the state's reward (its last step's).
    success: (state, goal state) -> () bool; default distance <= `success_threshold` (never if
      that is None).
    success_threshold: see `success`.
    goal: (key, initial state) -> goal state of a sampled problem; default the initial state
      itself (for envs whose target is part of the state, as Brax's reacher).
    action_low, action_high: raw action bounds, scalars or (A,) (Brax convention: [-1, 1]).
    name: the task name (default the env's class name).
  """

  def __init__(self, env: Any, *, distance: Optional[DistanceFn] = None,
               success: Optional[DistanceFn] = None, success_threshold: Optional[float] = None,
               goal: Optional[Callable[[jax.Array, Any], Any]] = None,
               action_low: Any = -1.0, action_high: Any = 1.0, name: Optional[str] = None):
    self.brax_env = env
    self.name = name or type(env).__name__.lower()
    self._distance = distance
    self._success = success
    self._threshold = success_threshold
    self._goal = goal
    self.action_size = int(env.action_size)
    self._low = jnp.broadcast_to(jnp.asarray(action_low, jnp.float32), (self.action_size,))
    self._high = jnp.broadcast_to(jnp.asarray(action_high, jnp.float32), (self.action_size,))
    self.flattener = _Flattener(lambda: env.reset(jax.random.key(0)))
    self.state_size = self.flattener.size
    self.proprio_size = 0
    try:
      self.dt = float(getattr(env, 'dt', 0.0))
    except TypeError:  # Not a concrete number.
      self.dt = 0.0

  def reset(self, key: jax.Array) -> Any:
    return self.brax_env.reset(key)

  def reset_to(self, state_vector: jax.Array) -> Any:
    return self.flattener.unflatten(state_vector)

  def step(self, state: Any, action: jax.Array) -> Any:
    self.check_action(action)
    return self.brax_env.step(state, action)

  def state_vector(self, state: Any) -> jax.Array:
    return self.flattener.flatten(state)

  def proprio(self, state: Any) -> jax.Array:
    del state  # Unused.
    return jnp.zeros((0,), jnp.float32)

  def render(self, state_vector: jax.Array, size: int = 64) -> jax.Array:
    raise NotImplementedError(f'{self.name}: FromBrax has no renderer; plan on states.')

  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    state, goal_state = self.reset_to(state_vector), self.reset_to(goal)
    if self._distance is None:
      return -jnp.asarray(state.reward, jnp.float32)
    return jnp.asarray(self._distance(state, goal_state), jnp.float32)

  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    if self._success is not None:
      return jnp.asarray(self._success(self.reset_to(state_vector), self.reset_to(goal)), bool)
    if self._threshold is None:
      return jnp.zeros((), bool)
    return self.distance(state_vector, goal) <= self._threshold

  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    k_reset, k_goal = jax.random.split(key)
    state = self.brax_env.reset(k_reset)
    goal = state if self._goal is None else self._goal(k_goal, state)
    return self.state_vector(state), self.state_vector(goal)

  @property
  def action_low(self) -> jax.Array:
    return self._low

  @property
  def action_high(self) -> jax.Array:
    return self._high

  def __repr__(self) -> str:
    return f'FromBrax({self.brax_env!r})'


def true_dynamics_problem(env: base.Env, step_cost: StepCostFn = negative_reward, *,
                          frameskip: int = 1) -> problems.Problem:
  """Planning through the env itself: the cost of (H, frameskip*A) actions is the sum of
  `step_cost(state, raw action, goal state)` over the H * frameskip simulated steps.

  Actions are raw (the normalizer is the identity). Observations are {'state': (S,)}. For
  gradient planners the env must be differentiable (MJX: see the module docstring).

  Returns:
    A `wmjax.planning.problems.Problem` for `wmjax.planning.mpc.evaluate`.
  """
  normalizer = execution.identity_normalizer(env.action_size, env.proprio_size)

  def observe(state_vector: jax.Array) -> dict:
    return {'state': state_vector}

  def make_cost(obs: dict, goal_obs: dict) -> Cost:
    start = env.reset_to(obs['state'])
    goal = env.reset_to(goal_obs['state'])

    def cost(actions: jax.Array) -> jax.Array:
      raw = normalizer.raw_actions(actions, frameskip).reshape(-1, env.action_size)

      def one(state, action):
        state = env.step(state, action)
        return state, step_cost(state, action, goal)

      _, costs = jax.lax.scan(one, start, raw)
      return jnp.sum(costs)

    return cost

  return problems.Problem(observe=observe, make_cost=make_cost, normalizer=normalizer)
