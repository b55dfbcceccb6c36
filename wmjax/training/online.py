"""Online World Modeling (OWM, PAPER.md section 4): planner-induced windows.

OWM is a data source plus the ordinary teacher-forcing step: every k training batches, take
dataset segments, plan from each segment's frame 0 to a goal a few model steps ahead with a
planner through the world model (the paper's: Adam, `owm_planner`), execute the plan in the true
simulator from the segment's TRUE initial state, and add the executed windows to a replay buffer
(`wmjax.data.replay`) that is trained on beside the offline data.

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

from wmjax.data import loader as loader_lib
from wmjax.envs import execution
from wmjax.envs.base import Env
from wmjax.planning import gradient
from wmjax.planning import problems
from wmjax.planning.base import check_positive_int
from wmjax.planning.base import Planner
from wmjax.types import Params, PRNGKey

Batch = dict[str, jax.Array]


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


def owm_planner(horizon: int, action_size: int, lr=0.3, num_steps: int = 100) -> Planner:
  """The paper's OWM planner (section 4): Adam (`optax.adam(lr)`, paper lr 0.3) for `num_steps`
  steps (paper 100) on (horizon, action_size) actions, N(0, 1) init, noise 0.003."""
  return gradient.gradient_planner(horizon, action_size, optax.adam(lr), num_steps)


def collect_windows(
    env: Env,
    model: Any,
    params: Params,
    stats: Any,
    arrays: loader_lib.WindowArrays,
    key: PRNGKey,
    *,
    planner: Planner,
    num_segments: int,
    goal_horizon: int,
    num_hist: int,
    frameskip: int,
    objective: str = 'last',
    rollout: str = 'history',
    alpha=1.0,
) -> tuple[Batch, dict[str, jax.Array]]:
  """Planner-induced windows (PAPER.md section 4, OWM), batched over segments; jittable.

  For each of `num_segments` uniformly drawn dataset segments: the start is the segment's frame
  0 true state vector, the goal its state `goal_horizon` model steps (goal_horizon * frameskip
  env steps) later; `planner` (the paper's: `owm_planner`, Adam) minimises the world-model cost
  between the encoded start and goal observations; the plan is executed in `env` from the true
  start state (`wmjax.envs.execution`) and windows are cut out of the executed trajectory only.
  The stored actions are the planner's normalised actions as given to the simulator (they may
  leave the data's range; where the simulator clips them, the model must learn that).

  Jit by closing over `env`, `model` and `planner` (and the static keyword sizes); `params`,
  `arrays`, `key` and `alpha` may be traced.

  Args:
    env: the real simulator (raw, not frame-skipped).
    model: a `wmjax.models.WorldModel` with action_dim = frameskip * A.
    params: its parameters.
    stats: dataset statistics (`wmjax.data.Stats`), used to normalise planner actions and the
      recorded proprio; pass the statistics the offline windows use (normally `arrays.stats`).
    arrays: the dataset on device; (N, T+1, S) raw states are read for starts and goals.
    key: PRNG key.
    planner: any `wmjax.planning.Planner` over (H, frameskip*A) normalised model actions.
    num_segments: M segments (= plans), static.
    goal_horizon: model steps from start to goal, 1 <= goal_horizon <= H.
    num_hist: history frames per window, 1 <= num_hist <= H.
    frameskip: raw env steps per model action.
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
  check_positive_int(num_segments, 'num_segments')
  check_positive_int(frameskip, 'frameskip')
  planner_horizon, planner_width = jax.eval_shape(
      lambda: planner.init(jax.random.key(0))).mean.shape
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
  if planner_width != width:
    raise ValueError(f'The planner plans actions of size {planner_width}; expected frameskip * A '
                     f'= {width}.')
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
