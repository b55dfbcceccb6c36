"""Sharded vs single-device results on 8 forced CPU devices; prints one JSON line of differences.

Run by tests/test_parallel.py with XLA_FLAGS=--xla_force_host_platform_device_count=8 in the
environment (set before jax is imported). Checks:
  train_step: 3 steps of `parallel.shard_train_step` vs a plain jit on one device, same batches;
  binary: the training stage's functions (wmjax.training.iterations, wmjax.experiment.evaluation)
    with a mesh vs without (3 sampled steps, validation loss, open-loop evaluation);
  evaluate: `mpc.sharded_evaluate` vs `mpc.evaluate` on one device (Adam MPC, CEM open loop);
  plan: the planning stage's `evaluate` on the 8-device mesh vs a 1-device mesh (simulator);
  finetune: the finetuning stage's AWM and OWM steps on the 8-device mesh vs a 1-device mesh.
"""

import json
import sys
import tempfile
import time

import jax
import numpy as np

from experiments.configs import wall
from tests.parallel import common
from wmjax import parallel
from wmjax import training
from wmjax.experiment import evaluation
from wmjax.experiment import finetune as finetune_lib
from wmjax.experiment import plan as plan_lib
from wmjax.experiment import planners
from wmjax.experiment import train as train_lib
from wmjax.training import iterations
from wmjax.planning import mpc
from wmjax.planning import problems

STEPS = 3
BATCH = 16


def train_step_check(out, mesh, setup):
  config, _, model, optimizer, state0 = setup
  step = training.make_train_step(training.teacher_forcing_loss(model), optimizer)
  batches = [common.random_batch(i, BATCH) for i in range(STEPS)]
  keys = [jax.random.key(10 + i) for i in range(STEPS)]

  one = jax.jit(step)
  state = jax.device_put(state0, jax.devices()[0])
  for b, k in zip(batches, keys):
    state, ref_metrics = one(state, b, k)

  sharded = parallel.shard_train_step(step, mesh)
  sstate = parallel.replicate(state0, mesh)
  for b, k in zip(batches, keys):
    gb = parallel.shard_batch(b, mesh)
    sstate, metrics = sharded(sstate, gb, k)
  out['train_batch_spec'] = str(gb['actions'].sharding.spec)
  out['train_batch_shard_rows'] = int(gb['actions'].addressable_shards[0].data.shape[0])
  out['train_state_replicated'] = bool(sstate.params['predictor'] is not None and all(
      x.sharding.is_fully_replicated for x in jax.tree.leaves(sstate.params)))
  out['train_params_rel'] = common.max_rel_diff(sstate.params, state.params)
  out['train_opt_rel'] = common.max_rel_diff(sstate.opt_state, state.opt_state)
  out['train_loss_rel'] = common.max_rel_diff(metrics['loss'], ref_metrics['loss'])
  out['train_params_moved'] = max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - y))), state.params, state0.params)))
  out['train_steps'] = int(sstate.step)
  del config


def binary_check(out, mesh, setup):
  config, env, model, optimizer, state0 = setup
  arrays = common.random_arrays(0)
  root = jax.random.key(int(config.seed))
  results = {}
  for name, m in (('one', None), ('mesh', mesh)):
    windows = iterations.Windows(env, int(config.num_hist), int(config.frameskip),
                                 int(config.image_size), False, m)
    it = iterations.teacher_forcing_iteration(model, optimizer, windows,
                                              int(config.train.batch_size), train_lib.STREAMS)
    eval_batch, rollout_eval = evaluation.eval_functions(model, m)
    state, train = (state0, arrays) if m is None else parallel.replicate((state0, arrays), m)
    for _ in range(STEPS):
      state, _ = it.step(state, train, root)
    val = evaluation.validation_loss(eval_batch, state, arrays, config, env, False)
    ev = evaluation.final_evaluation(rollout_eval, training.full_params(state), arrays, config,
                                     env, False)
    results[name] = (jax.device_get(state.params), val, ev['errors'])
  out['binary_params_rel'] = common.max_rel_diff(results['mesh'][0], results['one'][0])
  out['binary_val_rel'] = common.max_rel_diff(results['mesh'][1], results['one'][1])
  out['binary_eval_rel'] = common.max_rel_diff(results['mesh'][2], results['one'][2])


def evaluate_check(out, mesh, setup):
  config, env, model, _, state0 = setup
  params = training.full_params(state0)
  n = 8
  keys = jax.random.split(jax.random.key(3), n)
  init, goal = jax.jit(jax.vmap(env.sample_problem))(jax.random.split(jax.random.key(4), n))
  stats = common.random_arrays(0).stats
  make_problem = lambda p: problems.world_model_problem(env, model, p, stats, objective='all')
  problem = make_problem(params)
  for name, open_loop, replans, execute in (('adam', False, 2, 1), ('cem', True, 1, 5)):
    planner = planners.make_planner(name, config.plan[name], horizon=5, action_size=10,
                                    open_loop=open_loop)
    kw = dict(num_replans=replans, execute=execute, frameskip=5)
    ref = jax.device_get(jax.jit(lambda i, g, k: mpc.evaluate(
        env, planner, problem.observe, problem.make_cost, problem.normalizer, i, g, k, **kw))(
            init, goal, keys))
    got = mpc.sharded_evaluate(env, planner, make_problem, params, init, goal, keys, mesh=mesh,
                               **kw)
    out[f'eval_{name}_type'] = type(got.states).__name__
    out[f'eval_{name}_shape'] = list(got.states.shape)
    out[f'eval_{name}_success_equal'] = bool(np.array_equal(got.success, ref.success))
    out[f'eval_{name}_states_rel'] = common.max_rel_diff(got.states, ref.states)
    out[f'eval_{name}_plans_rel'] = common.max_rel_diff(got.plans, ref.plans)
    out[f'eval_{name}_distance_rel'] = common.max_rel_diff(got.final_distance, ref.final_distance)


def plan_check(out, mesh, setup):
  del setup  # Unused: the simulator plans.
  c = wall.get_config('test')
  c.plan.update(planner='cem', mode='open_loop', model='simulator', simulator_cost='state',
                num_instances=8, num_videos=0)
  runs = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, m in (('one', parallel.make_mesh(jax.devices()[:1])), ('mesh', mesh)):
      c.plan.run_name = name
      r = plan_lib.evaluate(c, tmp, progress=False, mesh=m)
      runs[name] = [(i['success'], i['final_distance'], i['min_distance']) for i in r['instances']]
  out['plan_instances'] = len(runs['mesh'])
  out['plan_success_equal'] = [a[0] for a in runs['mesh']] == [a[0] for a in runs['one']]
  out['plan_distance_rel'] = common.max_rel_diff([a[1:] for a in runs['mesh']],
                                                 [a[1:] for a in runs['one']])


def finetune_check(out, mesh, setup):
  config, env, model, _, state0 = setup
  arrays = common.random_arrays(0)
  root = jax.random.key(int(config.seed))
  for method in finetune_lib.METHODS:
    c = wall.get_config('test')
    c.finetune.method = method
    optimizer = training.make_optimizer(finetune_lib.finetune_train_config(c))
    results = {}
    for name, m in (('one', parallel.make_mesh(jax.devices()[:1])), ('mesh', mesh)):
      it = finetune_lib.make_iteration(c, env, model, optimizer, arrays.stats, False, m)
      params = training.full_params(state0)
      state = training.create_train_state(params, optimizer,
                                          extra=it.init_extra(params, arrays, root))
      state, train = parallel.replicate((state, arrays), m)
      for _ in range(STEPS):
        if it.collect is not None:
          state, _ = it.collect(state, train, root)
        state, _ = it.step(state, train, root)
      results[name] = jax.device_get((state.params, state.extra))
    out[f'finetune_{method}_params_rel'] = common.max_rel_diff(results['mesh'][0],
                                                              results['one'][0])
    out[f'finetune_{method}_extra_rel'] = common.max_rel_diff(results['mesh'][1],
                                                             results['one'][1])


def main():
  common.use_test_cache()
  out = {'device_count': jax.device_count()}
  mesh = parallel.make_mesh()
  setup = common.tiny_setup()
  checks = sys.argv[1:] or ['train_step', 'binary', 'evaluate', 'plan', 'finetune']
  for name, check in (('train_step', train_step_check), ('binary', binary_check),
                      ('evaluate', evaluate_check), ('plan', plan_check),
                      ('finetune', finetune_check)):
    if name in checks:
      t0 = time.perf_counter()
      check(out, mesh, setup)
      out[f'seconds_{name}'] = round(time.perf_counter() - t0, 2)
  print('RESULT ' + json.dumps(out))


if __name__ == '__main__':
  main()
