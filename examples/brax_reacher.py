r"""CEM and Adam under MPC on Brax's reacher, planning through its true dynamics.

  pip install 'wmjax[brax]'
  python examples/brax_reacher.py [--backend mjx] [--problems 16] [--budget 60]

The reacher (`brax.envs.get_environment('reacher')`) becomes a wmjax task with
`wmjax.envs.brax_compat.FromBrax` (distance: fingertip to target, from the observation);
`true_dynamics_problem` scores an action sequence by the fingertip-to-target distance summed over its
simulated steps, plus a small control cost; `wmjax.planning.mpc.evaluate` runs every MPC episode
of every problem in one compiled call. Both planners execute the same number of actions per episode.
With `--backend mjx` the solver is bounded so that Adam can differentiate it (README: "Gradients
through MJX").
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from wmjax import planning
from wmjax.envs import brax_compat
from wmjax.planning import mpc


def tip_to_target(state) -> jax.Array:
  """Fingertip-to-target distance: the reacher's observation ends with that vector."""
  return jnp.linalg.norm(state.obs[-3:])


def make_env(backend: str) -> brax_compat.FromBrax:
  import brax.envs  # pylint: disable=g-import-not-at-top
  reacher = brax.envs.get_environment('reacher', backend=backend)
  if backend == 'mjx':  # One solver iteration: jax.grad can go through mjx.step.
    reacher.sys = reacher.sys.tree_replace({'opt.iterations': 1, 'opt.ls_iterations': 4})
  return brax_compat.FromBrax(reacher, success_threshold=0.02,
                              distance=lambda state, goal: tip_to_target(state))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--backend', default='generalized', choices=('generalized', 'mjx'))
  parser.add_argument('--problems', type=int, default=16, help='Problems, batched.')
  parser.add_argument('--horizon', type=int, default=10, help='Actions per plan.')
  parser.add_argument('--budget', type=int, default=60, help='Executed actions per episode.')
  parser.add_argument('--cem', type=int, nargs=3, default=(64, 8, 4),
                      metavar=('SAMPLES', 'ELITES', 'ITERATIONS'))
  parser.add_argument('--adam_steps', type=int, default=20)
  args = parser.parse_args(argv)

  env = make_env(args.backend)
  # The summed distance, with a little control cost (Brax's reward weighs control as much as
  # distance, which makes a sampling planner keep the arm still).
  problem = brax_compat.true_dynamics_problem(
      env, step_cost=lambda state, action, goal: tip_to_target(state) + 0.01 * jnp.sum(action**2))
  h, a = args.horizon, env.action_size
  planners = {  # name: (planner, actions executed per plan)
      'CEM': (planning.cem(h, a, num_samples=args.cem[0], num_elites=args.cem[1],
                           num_iterations=args.cem[2]), 2),
      'Adam': (planning.gradient_planner(h, a, optax.adam(0.1), num_steps=args.adam_steps,
                                         action_low=env.action_low, action_high=env.action_high),
               1),
  }
  inits, goals = jax.vmap(env.sample_problem)(jax.random.split(jax.random.key(0),
                                                               args.problems))
  keys = jax.random.split(jax.random.key(1), args.problems)
  start = jax.vmap(env.distance)(inits, goals)
  print(f'reacher ({args.backend}), {args.problems} problems, {args.budget} executed actions '
        f'per episode; mean initial distance {float(start.mean()):.3f}')
  out = {}
  for name, (planner, execute) in planners.items():
    run = jax.jit(lambda i, g, k, planner=planner, execute=execute: mpc.evaluate(
        env, planner, problem.observe, problem.make_cost, problem.normalizer, i, g, k,
        num_replans=max(1, args.budget // execute), execute=execute, frameskip=1))
    t0 = time.perf_counter()
    compiled = run.lower(inits, goals, keys).compile()
    t1 = time.perf_counter()
    episodes = jax.block_until_ready(compiled(inits, goals, keys))
    t2 = time.perf_counter()
    out[name] = episodes
    print(f'{name:5s} success {int(episodes.success.sum())}/{args.problems}, mean final '
          f'distance {float(episodes.final_distance.mean()):.3f} ({t2 - t1:.1f} s, compile '
          f'{t1 - t0:.1f} s)')
  return out


if __name__ == '__main__':
  main()
