"""Contract tests for every planner: analytic optima, no recompiles, vmap, warm starts, bounds, NaN.

One jitted runner per planner and problem is shared by the tests; the planner is built INSIDE it
from traced bounds, which also checks that continuous hyperparameters are data.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wmjax import planning

H, A = 4, 2  # Horizon and action size of the test problems.

# name -> (factory(**bounds) -> Planner, max-abs action tolerance at the optimum).
PLANNERS = {
    'gd': (lambda **kw: planning.gradient_planner(H, A, optax.sgd(0.1), 200, **kw), 0.05),
    'adam': (lambda **kw: planning.gradient_planner(H, A, optax.adam(0.2), 100, **kw), 0.05),
    'cem': (lambda **kw: planning.cem(H, A, 300, 30, 30, **kw), 0.01),
    'mppi': (lambda **kw: planning.mppi(H, A, 512, 64, 20, **kw), 0.04),
    'gradcem': (lambda **kw: planning.gradcem(H, A, optax.adam(0.05), 64, 8, 20, **kw), 0.08),
}
GRADIENT = ('gd', 'adam')
NAMES = tuple(PLANNERS)

_RNG = np.random.default_rng(0)
WEIGHTS = _RNG.uniform(0.5, 2.0, (H, A)).astype(np.float32)
NO_BOUND = jnp.full((A,), jnp.inf, jnp.float32)

# Non-finite modes of the test cost: none, NaN/inf on part of the space, NaN everywhere.
CLEAN, PARTIAL, ALL_NAN = 0, 1, 2


def linear_problem(f, g, x0, goals, weights, lam):
  """x_{t+1} = F x_t + G u_t; cost sum_{t=1..H} W_t . (x_t - goal_t)^2 + lam |u|^2 (arrays)."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in
          dict(f=f, g=g, x0=x0, goals=goals, weights=weights, lam=lam).items()}


def quadratic_problem(target):
  """The special case F = 0, G = I, lam = 0: cost sum W (u - target)^2, minimiser u = target."""
  return linear_problem(np.zeros((A, A)), np.eye(A), np.zeros(A), target, WEIGHTS, 0.0)


def optimum(problem):
  """Closed-form minimiser: stacked states X = M U + c, solve [sqrt(W) M; sqrt(lam) I] U = ..."""
  p = {k: np.asarray(v, np.float64) for k, v in problem.items()}
  n = p['x0'].shape[0]
  m, c = np.zeros((H * n, H * A)), np.zeros(H * n)
  for t in range(1, H + 1):
    c[(t - 1) * n:t * n] = np.linalg.matrix_power(p['f'], t) @ p['x0']
    for k in range(t):
      m[(t - 1) * n:t * n, k * A:(k + 1) * A] = np.linalg.matrix_power(p['f'], t - 1 - k) @ p['g']
  sw = np.sqrt(p['weights'].reshape(-1))
  lhs = np.vstack([sw[:, None] * m, np.sqrt(p['lam']) * np.eye(H * A)])
  rhs = np.concatenate([sw * (p['goals'].reshape(-1) - c), np.zeros(H * A)])
  return np.linalg.lstsq(lhs, rhs, rcond=None)[0].reshape(H, A)


def problem_cost(problem, nan_mode):
  """The rolled-out cost; PARTIAL: NaN where u[0, 0] > 1.2, +inf where u[1, 1] < -1.2."""

  def cost(u):
    def step(x, inputs):
      u_t, goal_t, w_t = inputs
      x = problem['f'] @ x + problem['g'] @ u_t
      return x, jnp.sum(w_t * (x - goal_t) ** 2)

    _, costs = jax.lax.scan(step, problem['x0'], (u, problem['goals'], problem['weights']))
    c = jnp.sum(costs) + problem['lam'] * jnp.sum(u ** 2)
    partial = nan_mode == PARTIAL
    c = jnp.where(partial & (u[0, 0] > 1.2), jnp.nan, c)
    c = jnp.where(partial & (u[1, 1] < -1.2), jnp.inf, c)
    return jnp.where(nan_mode == ALL_NAN, jnp.nan, c)

  return cost


TRACES = {}


@functools.cache
def runner(name):
  """(jit(run), run) with run(problem, low, high, nan_mode, init_mean, key); counts traces."""
  make, _ = PLANNERS[name]

  def run(problem, low, high, nan_mode, init_mean, key):
    TRACES[name] = TRACES.get(name, 0) + 1
    planner = make(action_low=low, action_high=high)  # Bounds are traced data here.
    k_init, k_plan = jax.random.split(key)
    return planner.plan(problem_cost(problem, nan_mode), planner.init(k_init, init_mean), k_plan)

  return jax.jit(run), run


def solve(name, problem, key=0, low=None, high=None, nan_mode=CLEAN, init_mean=None):
  run, _ = runner(name)
  low = -NO_BOUND if low is None else jnp.full((A,), low, jnp.float32)
  high = NO_BOUND if high is None else jnp.full((A,), high, jnp.float32)
  init_mean = jnp.zeros((H, A)) if init_mean is None else init_mean
  return run(problem, low, high, jnp.int32(nan_mode), jnp.asarray(init_mean, jnp.float32),
             jax.random.key(key))


def targets(seed):
  return np.random.default_rng(seed).uniform(-1.0, 1.0, (H, A)).astype(np.float32)


@pytest.mark.parametrize('name', NAMES)
def test_reaches_quadratic_optimum_without_recompiling(name):
  tol = PLANNERS[name][1]
  for seed in (1, 2):  # Second call: new data, same compiled function.
    target = targets(seed)
    actions, state, info = solve(name, quadratic_problem(target), key=seed)
    np.testing.assert_allclose(optimum(quadratic_problem(target)), target, atol=1e-5)
    np.testing.assert_allclose(actions, target, atol=tol)
    np.testing.assert_allclose(state.mean, actions)
    assert info['cost'].shape == () and float(info['cost']) < 1e-2
    assert info['cost_history'].ndim == 1 and int(info['num_nonfinite']) == 0
  assert TRACES[name] == 1


@pytest.mark.parametrize('name', NAMES)
def test_reaches_linear_system_optimum(name):
  tol = PLANNERS[name][1]
  f = np.array([[1.0, 0.1], [-0.1, 1.0]]) * 0.95
  g = np.array([[0.5, 0.0], [0.1, 0.5]])
  problem = linear_problem(f, g, [1.0, -0.5], np.tile([0.3, 0.6], (H, 1)), np.ones((H, 2)), 0.5)
  u_opt = optimum(problem)
  actions, _, info = solve(name, problem, key=3)
  np.testing.assert_allclose(actions, u_opt, atol=tol)
  opt_cost = float(problem_cost(problem, CLEAN)(jnp.asarray(u_opt, jnp.float32)))
  assert opt_cost - 1e-4 <= float(info['cost']) <= opt_cost + 1e-2


@pytest.mark.parametrize('name', NAMES)
def test_vmapped_plans_match_single_plans(name):
  jitted, run = runner(name)
  batch = 3
  problems = jax.tree.map(lambda *x: jnp.stack(x),
                          *[quadratic_problem(targets(10 + i)) for i in range(batch)])
  keys = jax.random.split(jax.random.key(5), batch)
  args = (-NO_BOUND, NO_BOUND, jnp.int32(CLEAN), jnp.zeros((H, A)))
  batched = jax.jit(jax.vmap(run, in_axes=(0, None, None, None, None, 0)))(problems, *args, keys)
  for i in range(batch):
    single = jitted(jax.tree.map(lambda x: x[i], problems), *args, keys[i])
    np.testing.assert_allclose(batched[0][i], single[0], atol=1e-5)
    np.testing.assert_allclose(batched[2]['cost'][i], single[2]['cost'], atol=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_bounds_respected(name):
  tol = PLANNERS[name][1]
  target = 1.5 * np.sign(targets(4))  # Optimum outside [-1, 1]: the bounded optimum is the clip.
  actions, state, _ = solve(name, quadratic_problem(target), low=-1.0, high=1.0)
  assert np.all(np.asarray(actions) >= -1.0) and np.all(np.asarray(actions) <= 1.0)
  np.testing.assert_allclose(actions, np.clip(target, -1.0, 1.0), atol=tol)
  assert np.all(np.abs(np.asarray(state.mean)) <= 1.0)


@pytest.mark.parametrize('name', NAMES)
def test_partially_nonfinite_cost(name):
  tol = PLANNERS[name][1]
  target = targets(6)
  target[0, 0], target[1, 1] = 0.8, -0.8  # Optimum inside, next to the NaN / inf regions.
  actions, _, info = solve(name, quadratic_problem(target), nan_mode=PARTIAL)
  assert np.all(np.isfinite(actions))
  np.testing.assert_allclose(actions, target, atol=tol)
  if name not in GRADIENT:  # Samples from N(0, sigma0) land in the NaN / inf regions.
    assert int(info['num_nonfinite']) > 0


@pytest.mark.parametrize('name', NAMES)
def test_all_nonfinite_cost_leaves_plan_unchanged(name):
  init_mean = jnp.asarray(targets(7))
  actions, state, info = solve(name, quadratic_problem(targets(8)), nan_mode=ALL_NAN,
                              init_mean=init_mean)
  np.testing.assert_allclose(actions, init_mean)
  assert np.all(np.isfinite(actions)) and np.all(np.isfinite(state.std))
  assert int(info['num_nonfinite']) > 0
  if name not in GRADIENT:
    planner = PLANNERS[name][0]()
    np.testing.assert_allclose(state.std, planner.init(jax.random.key(0)).std)


def test_gradient_step_into_nonfinite_region_is_undone():
  # GD with lr 0.9 on |a - 0.5|^2 overshoots (a' - 0.5 = -0.8 (a - 0.5)): from a = -0.9 the first
  # step lands at 1.62 > 1.2, where the cost is NaN. The planner returns to -0.9 and halves its
  # step (a' - 0.5 = 0.1 (a - 0.5)), which stays finite and converges to 0.5.
  def cost(a):
    return jnp.where(a[0, 0] > 1.2, jnp.nan, jnp.sum((a - 0.5) ** 2))

  init = jnp.full((H, A), -0.9)
  for return_best in (False, True):
    planner = planning.gradient_planner(H, A, optax.sgd(0.9), 10, noise_std=0.0,
                                        return_best=return_best)
    actions, _, info = jax.jit(
        lambda k: planner.plan(cost, planner.init(k, init), k))(jax.random.key(0))
    history = np.asarray(info['cost_history'])
    assert int(info['num_nonfinite']) == 1  # Only the step that landed at 1.62.
    assert np.isnan(history[1]) and np.isfinite(np.delete(history, 1)).all()
    np.testing.assert_allclose(actions, 0.5, atol=1e-4)
    assert np.isfinite(info['cost']) and float(info['cost']) < 1e-6


def test_gradient_plan_ending_in_nonfinite_region_returns_last_finite_iterate():
  def cost(a):
    return jnp.where(a[0, 0] > 1.2, jnp.nan, jnp.sum((a - 0.5) ** 2))

  init = jnp.full((H, A), -0.9)
  # One step: it lands at 1.62 (NaN); the plan is the last finite iterate, the start.
  planner = planning.gradient_planner(H, A, optax.sgd(0.9), 1, noise_std=0.0)
  actions, state, info = jax.jit(
      lambda k: planner.plan(cost, planner.init(k, init), k))(jax.random.key(0))
  np.testing.assert_allclose(actions, init)
  np.testing.assert_allclose(state.mean, init)
  np.testing.assert_allclose(info['cost'], 8 * 1.4 ** 2, rtol=1e-5)
  assert int(info['num_nonfinite']) == 1


def test_gradient_planner_leaves_nonfinite_region_from_random_starts():
  # Adam with a large step keeps jumping into the NaN half-space u[0, 0] > 1.2 next to the
  # optimum at 1: every plan ends outside it, with a finite cost below its start's.
  target = np.ones((H, A), np.float32)

  def cost(a):
    return jnp.where(a[0, 0] > 1.2, jnp.nan, jnp.sum((a - target) ** 2))

  planner = planning.gradient_planner(H, A, optax.adam(0.5), 60, noise_std=0.0)
  keys = jax.random.split(jax.random.key(1), 8)
  actions, _, info = jax.jit(jax.vmap(
      lambda k: planner.plan(cost, planner.init(k), k)))(keys)
  start = jax.vmap(lambda k: cost(planner.init(k).mean))(keys)
  assert int(np.sum(info['num_nonfinite'])) > 0
  assert np.isfinite(np.asarray(info['cost'])).all()
  assert np.all(np.asarray(actions)[:, 0, 0] <= 1.2)
  finite_start = np.isfinite(np.asarray(start))
  assert np.all(np.asarray(info['cost'])[finite_start] < np.asarray(start)[finite_start])


@jax.custom_vjp
def _teleport_cost(a):
  return 0.5 * jnp.sum(a ** 2)


def _teleport_fwd(a):
  return _teleport_cost(a), a


def _teleport_bwd(a, g):
  # A fake gradient such that one SGD(lr=1) step maps a to 5 - |a|: the refined ranking reverses
  # the pre-gradient one (samples far from 0 become the best).
  return (g * (a - (5.0 - jnp.abs(a))),)


_teleport_cost.defvjp(_teleport_fwd, _teleport_bwd)


def test_gradcem_ranks_refined_samples():
  planner = planning.gradcem(1, 1, optax.sgd(1.0), num_samples=300, num_elites=30,
                             num_iterations=1)
  actions, state, info = jax.jit(
      lambda k: planner.plan(_teleport_cost, planner.init(k), k))(jax.random.key(0))
  # Refined elites: 5 - |a| for the 10% largest |a| of N(0, 1) (|a| > 1.64) -> mu about 3.
  # Ranking pre-gradient samples would give mu about 0 (their values) or 4.9 (refined values).
  assert 2.0 < float(actions[0, 0]) < 3.6
  assert float(state.std[0, 0]) < 0.6
  # Best refined cost 0.5 (5 - max|a|)^2 (about 3); a pre-gradient ranking would report ~12.5.
  assert float(info['cost_history'][0]) < 0.5 * (5 - 1.64) ** 2


@pytest.mark.parametrize('name', NAMES)
def test_shift_warm_start(name):
  planner = PLANNERS[name][0]()
  init_std = planner.init(jax.random.key(0)).std
  mean = jnp.arange(H * A, dtype=jnp.float32).reshape(H, A)
  state = planning.PlannerState(mean=mean, std=jnp.full((H, A), 0.3))
  shifted = planner.shift(state, 1, jax.random.key(1))
  np.testing.assert_allclose(shifted.mean[:-1], mean[1:])
  tail = shifted.mean[-1]
  if name in GRADIENT:  # Fresh N(0, init_std) actions; the std is untouched.
    assert np.all(tail != 0) and np.all(np.isfinite(tail))
    other = planner.shift(state, 1, jax.random.key(2)).mean[-1]
    assert not np.allclose(tail, other)
    np.testing.assert_allclose(shifted.std, state.std)
  else:  # Mean 0 at the tail; the std is reset to init_std everywhere.
    np.testing.assert_allclose(tail, 0.0)
    np.testing.assert_allclose(shifted.std, init_std)
  np.testing.assert_allclose(planner.shift(state, 0, jax.random.key(1)).mean, mean)
  assert planner.shift(state, H, jax.random.key(1)).mean.shape == (H, A)
  for bad in (-1, H + 1, 1.0):
    with pytest.raises(ValueError, match='num_executed'):
      planner.shift(state, bad, jax.random.key(1))


@pytest.mark.parametrize('name', NAMES)
def test_init_and_input_validation(name):
  planner = PLANNERS[name][0]()
  state = planner.init(jax.random.key(0))
  assert state.mean.shape == state.std.shape == (H, A)
  if name in GRADIENT:
    assert float(jnp.std(state.mean)) > 0.1  # N(0, init_std) actions.
  else:
    np.testing.assert_allclose(state.mean, 0.0)  # Section 3: mu0 = 0.
  with pytest.raises(ValueError, match='mean'):
    planner.init(jax.random.key(0), jnp.zeros((H + 1, A)))
  with pytest.raises(ValueError, match='scalar'):
    planner.plan(lambda a: a, state, jax.random.key(0))
  with pytest.raises(ValueError, match='action_low'):
    PLANNERS[name][0](action_low=jnp.zeros((3,)), action_high=jnp.ones((3,)))


def test_constructor_validation():
  with pytest.raises(ValueError, match='num_elites'):
    planning.cem(H, A, num_samples=10, num_elites=20)
  with pytest.raises(ValueError, match='horizon'):
    planning.mppi(0, A)
  with pytest.raises(ValueError, match='optax'):
    planning.gradient_planner(H, A, 'adam', 10)
  with pytest.raises(ValueError, match='both'):
    planning.cem(H, A, action_low=-1.0)


def test_hyperparameters_are_data():
  # Sweep Adam's learning rate with vmap: the planner is built from a traced value.
  cost = problem_cost(quadratic_problem(targets(9)), jnp.int32(CLEAN))
  mean = jnp.zeros((H, A))

  def run(lr):
    planner = planning.gradient_planner(H, A, optax.adam(lr), 5, noise_std=0.0)
    return planner.plan(cost, planner.init(jax.random.key(0), mean), jax.random.key(0))

  plans, _, info = jax.jit(jax.vmap(run))(jnp.array([0.01, 0.1]))
  assert np.all(np.isfinite(plans)) and not np.allclose(plans[0], plans[1])
  assert float(info['cost'][1]) < float(info['cost'][0]) < float(cost(mean))
