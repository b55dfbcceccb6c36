"""MPC and open-loop evaluation with the true dynamics as the model."""

import jax
import jax.numpy as jnp
import optax
import pytest

from wmjax import data as data_lib
from wmjax import envs
from wmjax import planning
from wmjax.envs import execution
from wmjax.planning import mpc
from wmjax.planning import problems

FRAMESKIP = 5
HORIZON = 5


def _true_dynamics_cost(env, normalizer):
  """Cost of normalised model actions: distance after simulating them in `env`."""

  def make_cost(obs, goal_obs):
    def cost(actions):
      raw = normalizer.raw_actions(actions, FRAMESKIP).reshape(-1, env.action_size)
      state = jax.lax.fori_loop(
          0, raw.shape[0], lambda i, s: env.step(s, raw[i]), env.reset_to(obs['state']))
      return jnp.sum((env.state_vector(state) - goal_obs['state']) ** 2)
    return cost

  return make_cost


def _state_observer(env):
  return lambda sv: {'state': sv}


def _normalizer(env):
  return execution.Normalizer(
      action_mean=env.action_mean, action_std=env.action_std,
      proprio_mean=jnp.zeros(env.proprio_size), proprio_std=jnp.ones(env.proprio_size))


def _wall_problems(env, n):
  # Start and goal in the same room, so a straight-line cost is not misleading.
  init = jnp.stack([jnp.linspace(8.0, 20.0, n), jnp.linspace(10.0, 50.0, n)], axis=-1)
  goal = init + jnp.array([6.0, 8.0])
  return init, goal


@pytest.mark.parametrize('name', ['cem', 'adam'])
def test_mpc_true_dynamics_reaches_goal(name):
  env = envs.load('wall')
  normalizer = _normalizer(env)
  a = FRAMESKIP * env.action_size
  if name == 'cem':
    planner = planning.cem(HORIZON, a, num_samples=64, num_elites=8, num_iterations=5)
    execute = HORIZON
  else:
    planner = planning.gradient_planner(
        HORIZON, a, optax.adam(0.2), num_steps=30, action_low=-1.0, action_high=1.0)
    execute = 1
  init, goal = _wall_problems(env, 3)
  run = jax.jit(lambda i, g, k: mpc.evaluate(
      env, planner, _state_observer(env), _true_dynamics_cost(env, normalizer), normalizer,
      i, g, k, num_replans=4, execute=execute, frameskip=FRAMESKIP))
  ep = run(init, goal, jax.random.split(jax.random.key(0), 3))
  assert ep.states.shape == (3, 4 * execute + 1, env.state_size)
  assert ep.plans.shape == (3, 4, HORIZON, a)
  assert bool(jnp.all(ep.success)), ep.min_distance
  assert bool(jnp.all(ep.success_step >= 1))
  assert bool(jnp.all(jnp.isfinite(ep.final_distance)))


def test_success_is_sticky_and_open_loop_shape():
  env = envs.load('wall')
  normalizer = _normalizer(env)
  a = FRAMESKIP * env.action_size
  planner = planning.cem(HORIZON, a, num_samples=32, num_elites=4, num_iterations=3)
  init = jnp.array([[20.0, 30.0]])
  goal = init  # Already at the goal: success at the first check, whatever happens after.
  ep = mpc.evaluate(env, planner, _state_observer(env), _true_dynamics_cost(env, normalizer),
                    normalizer, init, goal + jnp.array([[1.0, 0.0]]),
                    jax.random.split(jax.random.key(1), 1),
                    num_replans=1, execute=HORIZON, frameskip=FRAMESKIP)
  assert ep.states.shape == (1, HORIZON + 1, 2)
  assert bool(ep.success[0])
  assert int(ep.replans_to_success[0]) == 1


def test_rendered_latent_ceiling_scores_like_the_world_model():
  """The simulator ceiling with `rendered_latent_fn` applies the model's own cost to simulated
  states: the encoder of the rendered frames, as planning observes them; and Adam can
  differentiate it through the renderer."""
  from wmjax import models  # pylint: disable=g-import-not-at-top
  env = envs.load('wall')
  normalizer = _normalizer(env)
  a = FRAMESKIP * env.action_size
  wm = models.make_world_model(dict(
      encoder='conv', image_size=16, proprio_dim=env.proprio_size, action_dim=a, num_hist=1,
      conv=dict(channels=(4, 8), token_dim=6),
      predictor=dict(depth=1, num_heads=2, head_dim=8, mlp_dim=16)))
  observe = problems.pixel_observer(env, normalizer, 16)
  init, goal = _wall_problems(env, 1)
  params = wm.init(jax.random.key(0), observe(init[0]))
  stats = data_lib.nominal_stats(env)
  problem = problems.simulator_problem(env, stats, frameskip=FRAMESKIP, objective='last',
                                       latent_fn=problems.rendered_latent_fn(env, wm, params))
  cost = problem.make_cost(observe(init[0]), observe(goal[0]))
  actions = jax.random.normal(jax.random.key(1), (HORIZON, a)) * 0.5
  raw = normalizer.raw_actions(actions, FRAMESKIP).reshape(-1, env.action_size)
  final = jax.lax.fori_loop(0, raw.shape[0], lambda i, s: env.step(s, raw[i]),
                            env.reset_to(init[0]))
  z_final = wm.encode(params, observe(env.state_vector(final)))
  z_goal = wm.encode(params, observe(goal[0]))
  want = planning.trajectory_cost(
      jax.tree.map(lambda x: x[None], z_final), z_goal, mode='last', alpha=1.0)
  assert float(cost(actions)) == pytest.approx(float(want), rel=1e-2, abs=1e-5)
  g = jax.grad(cost)(actions)
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


@pytest.mark.parametrize('objective', ['last', 'all'])
def test_task_distance_ceiling_scores_the_tasks_distance(objective):
  """`task_distance`: the squared task distance of the simulated states to the goal over the
  start's, combined over time as latent distances are; a plan toward the goal scores lower."""
  env = envs.load('wall')
  a = FRAMESKIP * env.action_size
  init, goal = _wall_problems(env, 1)
  problem = problems.simulator_problem(env, data_lib.nominal_stats(env), frameskip=FRAMESKIP,
                                       objective=objective, task_distance=True)
  normalizer = problem.normalizer
  cost = problem.make_cost(problem.observe(init[0]), problem.observe(goal[0]))
  actions = jax.random.normal(jax.random.key(1), (HORIZON, a)) * 0.5
  raw = normalizer.raw_actions(actions, FRAMESKIP).reshape(HORIZON, FRAMESKIP, env.action_size)
  state, ratios = env.reset_to(init[0]), [1.0]
  d0 = float(env.distance(init[0], goal[0]))
  for t in range(HORIZON):
    for r in raw[t]:
      state = env.step(state, r)
    ratios.append((float(env.distance(env.state_vector(state), goal[0])) / d0) ** 2)
  if objective == 'last':
    want = ratios[-1]
  else:
    w = [0.5**t for t in range(HORIZON + 1)]
    want = sum(wi * r for wi, r in zip(w, ratios)) / sum(w) / (HORIZON + 1)
  assert float(cost(actions)) == pytest.approx(want, rel=1e-4)
  direction = (goal[0, :2] - init[0, :2]) / jnp.linalg.norm(goal[0, :2] - init[0, :2])
  still = jnp.zeros((HORIZON, FRAMESKIP * env.action_size))  # Raw: one push, then rest.
  toward = normalizer.normalize_actions(still.at[0].set(jnp.tile(direction * 0.5, FRAMESKIP)))
  away = normalizer.normalize_actions(still.at[0].set(jnp.tile(-direction * 0.5, FRAMESKIP)))
  assert float(cost(toward)) < float(cost(normalizer.normalize_actions(still))) < float(cost(away))
  with pytest.raises(ValueError, match='no latent_fn'):
    problems.simulator_problem(env, data_lib.nominal_stats(env), frameskip=FRAMESKIP,
                               task_distance=True, latent_fn=lambda sv, p: sv)


def test_bad_input():
  env = envs.load('wall')
  normalizer = _normalizer(env)
  planner = planning.cem(HORIZON, 10, num_samples=8, num_elites=2, num_iterations=1)
  args = (env, planner, _state_observer(env), _true_dynamics_cost(env, normalizer), normalizer)
  with pytest.raises(ValueError, match='init_states'):
    mpc.evaluate(*args, jnp.zeros((2, 3)), jnp.zeros((2, 3)), jax.random.split(jax.random.key(0), 2),
                 num_replans=1, execute=1, frameskip=FRAMESKIP)
  with pytest.raises(ValueError, match='execute'):
    mpc.evaluate(*args, jnp.zeros((2, 2)), jnp.zeros((2, 2)), jax.random.split(jax.random.key(0), 2),
                 num_replans=1, execute=6, frameskip=FRAMESKIP)
