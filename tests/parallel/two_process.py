"""One process of a two-process jax.distributed job on localhost; prints one JSON line.

  python -m tests.parallel.two_process PROCESS_ID PORT   # From the checkout.

Run twice (ids 0 and 1, same free PORT) by tests/test_parallel.py, with
XLA_FLAGS=--xla_force_host_platform_device_count=2 in the environment: a job of 4 CPU devices.
Each process feeds its own half of every global batch (`shard_batch`), takes 3 data-parallel
training steps and compares the parameters with a single-device step on the whole batch; then
evaluates 4 planning instances split across the job (`mpc.sharded_evaluate`).
"""

import json
import sys

import jax

from tests.parallel import common
from wmjax import distributed
from wmjax import parallel
from wmjax import training
from wmjax.experiment import planners
from wmjax.planning import mpc
from wmjax.planning import problems

NUM_PROCESSES = 2
STEPS = 3
BATCH = 8


def main():
  process_id, port = int(sys.argv[1]), int(sys.argv[2])
  distributed.initialize(f'127.0.0.1:{port}', NUM_PROCESSES, process_id)
  common.use_test_cache()
  out = {'process_index': jax.process_index(), 'process_count': jax.process_count(),
         'device_count': jax.device_count(), 'local_device_count': jax.local_device_count(),
         'primary': distributed.is_primary()}
  mesh = parallel.make_mesh()
  config, env, model, optimizer, state0 = common.tiny_setup()
  step = training.make_train_step(training.teacher_forcing_loss(model), optimizer)

  sharded = parallel.shard_train_step(step, mesh)
  one = jax.jit(step)  # This process alone, on its first device.
  state, ref = parallel.replicate(state0, mesh), state0
  per_process = BATCH // NUM_PROCESSES
  for i in range(STEPS):
    full = common.random_batch(i, BATCH)
    mine = jax.tree.map(lambda x: x[process_id * per_process:(process_id + 1) * per_process], full)
    key = jax.random.key(10 + i)
    state, metrics = sharded(state, parallel.shard_batch(mine, mesh), key)
    ref, _ = one(ref, full, key)
  params = parallel.gather(state.params)
  out['steps'] = int(parallel.gather(state.step))
  out['loss'] = float(parallel.gather(metrics['loss']))
  out['params_fingerprint'] = common.fingerprint(params)
  out['params_rel_vs_one_device'] = common.max_rel_diff(params, jax.device_get(ref.params))

  n = 4
  keys = jax.random.split(jax.random.key(3), n)
  init, goal = jax.jit(jax.vmap(env.sample_problem))(jax.random.split(jax.random.key(4), n))
  stats = common.random_arrays(0).stats
  make_problem = lambda p: problems.world_model_problem(env, model, p, stats)
  params = training.full_params(state0)
  problem = make_problem(params)
  planner = planners.make_planner('adam', config.plan.adam, horizon=5, action_size=10)
  kw = dict(num_replans=1, execute=1, frameskip=5)
  ep = mpc.sharded_evaluate(env, planner, make_problem, params, init, goal, keys, mesh=mesh, **kw)
  ref_ep = jax.device_get(jax.jit(lambda i, g, k: mpc.evaluate(
      env, planner, problem.observe, problem.make_cost, problem.normalizer, i, g, k, **kw))(
          init, goal, keys))
  out['eval_shape'] = list(ep.states.shape)
  out['eval_fingerprint'] = common.fingerprint(ep)
  out['eval_rel_vs_one_device'] = common.max_rel_diff(ep.states, ref_ep.states)
  print('RESULT ' + json.dumps(out), flush=True)


if __name__ == '__main__':
  main()
