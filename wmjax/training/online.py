"""Online World Modeling (OWM, PAPER.md section 4): planner-induced windows and a replay buffer.

OWM is a data source plus the ordinary teacher-forcing step: every k training batches, take
dataset segments, plan from each segment's frame 0 to a goal a few model steps ahead with the
Adam gradient planner through the world model, execute the plan in the true simulator from the
segment's TRUE initial state, and add the executed windows to a buffer that is trained on beside
the offline data.

Windows have the loader's layout without pixels (pixels are rendered from 'state' at sampling
time with `wmjax.data.add_pixels`, like offline windows):

  {'state': (num_hist+1, S) raw float32, 'proprio': (num_hist+1, P) normalised float32,
   'actions': (num_hist, frameskip*A) normalised float32}

and action k is the model action taken at frame k (leading to frame k+1).

Consistency (PAPER.md section 4): the reference implementation splices ground-truth history in
front of a simulated rollout that restarts at frame 0, so its windows are not physical
trajectories. Here every window is cut out of ONE executed trajectory; the only dataset value
used is the segment's initial state vector, from which the simulator is restarted.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wmjax.data import loader as loader_lib
from wmjax.envs import execution
from wmjax.envs.base import Env
from wmjax.planning import gradient
from wmjax.planning import problems
from wmjax.types import Params, PRNGKey

Batch = dict[str, jax.Array]


# ----------------------------------------------------------------------------- replay buffer


@struct.dataclass
class ReplayBuffer:
  """A fixed-capacity ring buffer of windows (carried through jit as data).

  Attributes:
    data: dict of (C, ...) arrays, one leading entry per window; C = capacity.
    size: () int32, number of filled entries (<= C). Entries 0 .. size-1 are filled.
    cursor: () int32, the entry the next inserted window goes to (always in [0, C)).
  """

  data: dict[str, jax.Array]
  size: jax.Array
  cursor: jax.Array

  @property
  def capacity(self) -> int:
    """C, the static number of entries."""
    return int(jax.tree.leaves(self.data)[0].shape[0])


def _spec(x: Any) -> tuple[tuple[int, ...], Any]:
  return tuple(jnp.shape(x)), jnp.dtype(x.dtype)


def init_buffer(example: Mapping[str, Any], capacity: int) -> ReplayBuffer:
  """An empty buffer for windows shaped like `example`.

  Args:
    example: ONE window, a dict of arrays or `jax.ShapeDtypeStruct`s, e.g.
      {'state': (num_hist+1, S) float32, 'proprio': (num_hist+1, P) float32,
       'actions': (num_hist, frameskip*A) float32}.
    capacity: C >= 1, static.

  Returns:
    A `ReplayBuffer` with zero-filled (C, ...) data, size 0 and cursor 0.
  """
  if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
    raise ValueError(f'capacity must be a Python int >= 1; got {capacity!r}.')
  if not isinstance(example, Mapping) or not example:
    raise ValueError(f'example must be a non-empty dict of per-window arrays; got {example!r}.')
  data = {}
  for k, x in example.items():
    shape, dtype = _spec(x)
    data[k] = jnp.zeros((capacity,) + shape, dtype)
  return ReplayBuffer(data=data, size=jnp.zeros((), jnp.int32), cursor=jnp.zeros((), jnp.int32))


def _check_windows(buffer: ReplayBuffer, windows: Mapping[str, jax.Array]) -> int:
  """Checks keys, per-window shapes and dtypes against the buffer; returns N."""
  want, got = sorted(buffer.data), sorted(windows) if isinstance(windows, Mapping) else None
  if want != got:
    raise ValueError(f'windows must have keys {want}; got {got}.')
  counts = {k: jnp.shape(v)[0] if jnp.ndim(v) else None for k, v in windows.items()}
  for k in want:
    b_shape, b_dtype = _spec(buffer.data[k])
    w_shape, w_dtype = _spec(windows[k])
    if w_shape[1:] != b_shape[1:] or w_dtype != b_dtype:
      raise ValueError(
          f"windows['{k}'] must be (N, {', '.join(map(str, b_shape[1:]))}) {b_dtype}; got "
          f'{w_shape} {w_dtype}.')
  if len(set(counts.values())) != 1:
    raise ValueError(f'windows disagree on the number of windows N: {counts}.')
  return int(counts[want[0]])


def insert(buffer: ReplayBuffer, windows: Mapping[str, jax.Array]) -> ReplayBuffer:
  """Writes N windows at the cursor, wrapping around and overwriting the oldest (jittable).

  The result is the same as inserting the windows one at a time in order. When N exceeds the
  capacity C, only the last C windows are kept (the earlier ones would have been overwritten
  within this same insert).

  Args:
    buffer: the buffer.
    windows: dict with the buffer's keys of (N, ...) arrays (N static; N = 0 is a no-op).

  Returns:
    The updated buffer: size = min(size + N, C), cursor = (cursor + N) mod C.

  Raises:
    ValueError: keys, per-window shapes or dtypes differ from the buffer's, or N is not the
      same for every key.
  """
  n = _check_windows(buffer, windows)
  c = buffer.capacity
  if n == 0:
    return buffer
  keep = min(n, c)
  # Window j of the last `keep` goes where a one-by-one insert would leave it.
  idx = (buffer.cursor + (n - keep) + jnp.arange(keep, dtype=jnp.int32)) % c  # distinct
  data = {k: buffer.data[k].at[idx].set(windows[k][n - keep:]) for k in buffer.data}
  return ReplayBuffer(
      data=data,
      size=jnp.minimum(buffer.size + n, c).astype(jnp.int32),
      cursor=((buffer.cursor + n) % c).astype(jnp.int32))


def sample(buffer: ReplayBuffer, key: PRNGKey, batch_size: int) -> Batch:
  """Windows drawn uniformly with replacement from the filled entries (jittable).

  Args:
    buffer: the buffer.
    key: PRNG key.
    batch_size: B, static.

  Returns:
    dict of (B, ...) arrays.

  Raises:
    ValueError: the buffer is known to be empty (a concrete size of 0, outside jit). Inside jit
      the size cannot be checked: sampling an empty buffer then returns B copies of entry 0,
      which holds zeros (check `buffer.size` before sampling).
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size must be a Python int >= 1; got {batch_size!r}.')
  if not isinstance(buffer.size, jax.core.Tracer) and int(buffer.size) == 0:
    raise ValueError('Cannot sample from an empty replay buffer (size 0); insert windows first.')
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  return {k: v[idx] for k, v in buffer.data.items()}


def mix_batches(offline: Mapping[str, jax.Array], online: Mapping[str, jax.Array]) -> Batch:
  """Concatenates two window batches along the batch axis (offline first).

  Mix before `add_pixels` (buffer windows carry no pixels), or render both.

  Args:
    offline: dict of (B1, ...) arrays.
    online: dict with the same keys of (B2, ...) arrays, equal per-window shapes and dtypes.

  Returns:
    dict of (B1 + B2, ...) arrays.
  """
  if sorted(offline) != sorted(online):
    raise ValueError(f'Batches must have the same keys; got offline {sorted(offline)} and '
                     f'online {sorted(online)} (render pixels on both or on neither).')
  for k in offline:
    a, b = _spec(offline[k]), _spec(online[k])
    if len(a[0]) < 1 or a[0][1:] != b[0][1:] or a[1] != b[1]:
      raise ValueError(f"Batches disagree on '{k}': offline {a[0]} {a[1]}, online {b[0]} {b[1]} "
                       '(only the leading batch axis may differ).')
  return {k: jnp.concatenate([offline[k], online[k]], axis=0) for k in offline}


# ----------------------------------------------------------------------------- OWM windows


def trajectory_windows(traj: Mapping[str, jax.Array], actions: jax.Array,
                       num_hist: int) -> Batch:
  """Every window of num_hist+1 consecutive frames of each trajectory, and its actions.

  Windows never cross trajectories (PAPER.md section 4: consistent windows only).

  Args:
    traj: {'state': (B, H+1, S), 'proprio': (B, H+1, P)} (e.g. from
      `wmjax.envs.execution.execute_plans`).
    actions: (B, H, frameskip*A) normalised; action t leads from frame t to frame t+1.
    num_hist: history frames per window, 1 <= num_hist <= H, static.

  Returns:
    {'state': (B*W, num_hist+1, S), 'proprio': (B*W, num_hist+1, P),
     'actions': (B*W, num_hist, frameskip*A)} with W = H - num_hist + 1 windows per
    trajectory, trajectory-major (window w of trajectory b is row b*W + w).
  """
  if sorted(traj) != ['proprio', 'state']:
    raise ValueError(f"traj must have keys ['proprio', 'state']; got {sorted(traj)}.")
  if jnp.ndim(actions) != 3:
    raise ValueError(f'actions must be (B, H, frameskip*A); got {jnp.shape(actions)}.')
  b, h = actions.shape[:2]
  for k in ('state', 'proprio'):
    if jnp.ndim(traj[k]) != 3 or traj[k].shape[:2] != (b, h + 1):
      raise ValueError(f"traj['{k}'] must be ({b}, {h + 1}, ...) for actions {actions.shape}; "
                       f'got {jnp.shape(traj[k])}.')
  if isinstance(num_hist, bool) or not isinstance(num_hist, int) or not 1 <= num_hist <= h:
    raise ValueError(f'num_hist must be a Python int in [1, {h}] (the trajectory has {h} '
                     f'actions); got {num_hist!r}.')
  w = h - num_hist + 1
  first = jnp.arange(w)[:, None]
  frame_idx = first + jnp.arange(num_hist + 1)  # (W, num_hist+1)
  act_idx = first + jnp.arange(num_hist)        # (W, num_hist)
  flat = lambda x: x.reshape((b * w,) + x.shape[2:])
  return {
      'state': flat(traj['state'][:, frame_idx]),
      'proprio': flat(traj['proprio'][:, frame_idx]),
      'actions': flat(actions[:, act_idx]),
  }


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f'{name} must be a Python int >= {minimum} (a static size); got {value!r}.')
  return value


def collect_windows(
    env: Env,
    model: Any,
    params: Params,
    stats: Any,
    arrays: loader_lib.WindowArrays,
    key: PRNGKey,
    *,
    num_segments: int,
    goal_horizon: int,
    num_hist: int,
    frameskip: int,
    planner_horizon: int = 5,
    lr=0.3,
    num_steps: int = 100,
    objective: str = 'last',
    rollout: str = 'history',
    alpha=1.0,
) -> tuple[Batch, dict[str, jax.Array]]:
  """Planner-induced windows (PAPER.md section 4, OWM), batched over segments; jittable.

  For each of `num_segments` uniformly drawn dataset segments: the start is the segment's frame
  0 true state vector, the goal its state `goal_horizon` model steps (goal_horizon * frameskip
  env steps) later; the Adam gradient planner (`optax.adam(lr)`, `num_steps` steps, horizon
  `planner_horizon`, N(0, 1) init, noise 0.003) minimises the world-model cost between the
  encoded start and goal observations; the plan is executed in `env` from the true start state
  and windows are cut out of the executed trajectory only. The stored actions are the planner's
  normalised actions as given to the simulator (they may leave the data's range; the simulator
  clips them, and the model must learn that).

  Jit by closing over `env` and `model` (and the static keyword sizes); `params`, `arrays`,
  `key` and `lr`/`alpha` may be traced.

  Args:
    env: the real simulator (raw, not frame-skipped).
    model: a `wmjax.models.WorldModel` with action_dim = frameskip * A.
    params: its parameters.
    stats: dataset statistics (`wmjax.data.Stats`), used to normalise planner actions and the
      recorded proprio; pass the statistics the offline windows use (normally `arrays.stats`).
    arrays: the dataset on device; (N, T+1, S) raw states are read for starts and goals.
    key: PRNG key.
    num_segments: M segments (= plans), static.
    goal_horizon: model steps from start to goal, 1 <= goal_horizon <= planner_horizon.
    num_hist: history frames per window, 1 <= num_hist <= planner_horizon.
    frameskip: raw env steps per model action.
    planner_horizon: H, model actions per plan.
    lr: Adam learning rate (paper: 0.3).
    num_steps: Adam steps (paper: 100).
    objective: 'last' | 'all' (paper: 'last').
    rollout: 'history' | 'markov' (paper: 'history').
    alpha: proprio weight of the cost.

  Returns:
    (windows, info):
      windows: {'state': (M*W, num_hist+1, S) raw, 'proprio': (M*W, num_hist+1, P) normalised,
        'actions': (M*W, num_hist, frameskip*A) normalised}, W = H - num_hist + 1,
        segment-major (see `trajectory_windows`).
      info: {'goal_distance': (M,) env.distance of the executed final state to the goal,
        'start_distance': (M,) env.distance of the start to the goal,
        'plan_cost': (M,) the planner's final world-model cost,
        'traj': (M,) int32 and 'start': (M,) int32 dataset trajectory and env step of each
        segment, 'init_state': (M, S), 'goal_state': (M, S), 'plans': (M, H, frameskip*A)}.
  """
  _check_int(num_segments, 'num_segments')
  _check_int(frameskip, 'frameskip')
  _check_int(planner_horizon, 'planner_horizon')
  _check_int(num_steps, 'num_steps')
  if (isinstance(goal_horizon, bool) or not isinstance(goal_horizon, int)
      or not 1 <= goal_horizon <= planner_horizon):
    raise ValueError(
        f"OWM goal horizon {goal_horizon!r} must be a Python int in [1, planner_horizon]: a goal "
        f"longer than the planner's horizon ({planner_horizon} model steps) cannot be reached by "
        'one plan, and it must be at least 1 model step ahead.')
  if (isinstance(num_hist, bool) or not isinstance(num_hist, int)
      or not 1 <= num_hist <= planner_horizon):
    raise ValueError(
        f"num_hist must be a Python int in [1, planner_horizon = {planner_horizon}] (a window "
        f'of num_hist+1 frames must fit in one executed plan); got {num_hist!r}.')
  width = frameskip * env.action_size
  if int(model.action_dim) != width:
    raise ValueError(f'model.action_dim is {model.action_dim}; expected frameskip * A = '
                     f'{frameskip} * {env.action_size} = {width}.')
  n, t1, s = arrays.states.shape
  if s != env.state_size:
    raise ValueError(f'arrays.states must be (N, T+1, {env.state_size}); got '
                     f'{arrays.states.shape}.')
  span = goal_horizon * frameskip
  if n < 1 or t1 - 1 < span:
    raise ValueError(
        f'Segments of goal_horizon * frameskip = {goal_horizon} * {frameskip} = {span} env '
        f'steps do not fit the dataset: {n} trajectories of {t1 - 1} steps.')

  problem = problems.world_model_problem(env, model, params, stats, objective=objective,
                                    alpha=alpha, rollout=rollout)
  planner = gradient.gradient_planner(planner_horizon, width, optax.adam(lr), num_steps)

  # Section 4: segments from the dataset; start = frame 0, goal = goal_horizon model steps on.
  k_traj, k_start, k_plan = jax.random.split(key, 3)
  traj = jax.random.randint(k_traj, (num_segments,), 0, n, dtype=jnp.int32)
  start = jax.random.randint(k_start, (num_segments,), 0, t1 - span, dtype=jnp.int32)
  init_states = arrays.states[traj, start]
  goal_states = arrays.states[traj, start + span]

  def solve(init_state, goal_state, key):
    k_init, k_run = jax.random.split(key)
    cost = problem.make_cost(problem.observe(init_state), problem.observe(goal_state))
    actions, _, info = planner.plan(cost, planner.init(k_init), k_run)
    return actions, info['cost']

  with jax.named_scope('plan'):
    plans, costs = jax.vmap(solve)(init_states, goal_states,
                                   jax.random.split(k_plan, num_segments))
  # Section 4: execute from the segment's TRUE initial state, batched (the reference: one by one).
  executed = execution.execute_plans(env, problem.normalizer, init_states, plans, frameskip)
  # Section 4: windows from the executed trajectories only (no spliced dataset history).
  windows = trajectory_windows(executed, plans, num_hist)
  info = {
      'goal_distance': jax.vmap(env.distance)(executed['state'][:, -1], goal_states),
      'start_distance': jax.vmap(env.distance)(init_states, goal_states),
      'plan_cost': costs,
      'traj': traj,
      'start': start,
      'init_state': init_states,
      'goal_state': goal_states,
      'plans': plans,
  }
  return windows, info
