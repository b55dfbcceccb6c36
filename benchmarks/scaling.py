r"""Data-parallel scaling: training steps/s and batched MPC episodes/s on 1, 2, 4, 8 devices.

One run times every device count on sub-meshes of the same devices (`wmjax.parallel`), with a
fixed global batch and a fixed number of evaluation instances (strong scaling), so the ratios
against one device are comparable. Training: `parallel.shard_train_step` of the world-model loss
on a random Wall model (parameters replicated, global batch split). Evaluation: Adam MPC episodes
(`mpc.sharded_evaluation`: instances split, model replicated).

  python benchmarks/scaling.py                  # 8 forced CPU devices, cpu-variant model sizes
  python benchmarks/scaling.py --quick          # seconds: test-variant model, tiny sizes
  python benchmarks/scaling.py --devices 4 --batch_size 64 --instances 32

Run as a script on a CPU it asks XLA for `--devices` host devices (XLA_FLAGS, before jax is
imported). Forced CPU devices share the machine's cores: on a 2-core machine 8 of them cannot
go faster than 2 cores allow, and the numbers show the overhead of splitting, not the speed-up
of real accelerators. On a GPU/TPU host the real devices are used (`--devices` caps the count).
"""

import os
import sys


def _force_host_devices(argv: list[str]) -> None:
  """Adds --xla_force_host_platform_device_count=<--devices> to XLA_FLAGS (before jax loads)."""
  count = '8'
  for i, arg in enumerate(argv):
    if arg.startswith('--devices='):
      count = arg.split('=', 1)[1]
    elif arg == '--devices' and i + 1 < len(argv):
      count = argv[i + 1]
  flags_env = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags_env:
    os.environ['XLA_FLAGS'] = f'{flags_env} --xla_force_host_platform_device_count={count}'.strip()


if __name__ == '__main__':
  _force_host_devices(sys.argv)

import time  # pylint: disable=g-import-not-at-top,g-bad-import-order
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import wall
from wmjax import data as data_lib
from wmjax import envs
from wmjax import machine as machine_lib
from wmjax import parallel
from wmjax import training
from wmjax.experiment import planners as planners_lib
from wmjax.experiment import runtime
from wmjax.planning import mpc
from wmjax.planning import problems

_DEVICES = flags.DEFINE_integer('devices', 8, 'Most devices to use (forced CPU devices when run '
                                'as a script on a CPU).')
_VARIANT = flags.DEFINE_enum('variant', 'cpu', ('test', 'cpu'),
                             'Wall config variant whose model sizes the random model uses.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Global training batch (windows per step).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed training steps per device count.')
_INSTANCES = flags.DEFINE_integer('instances', 16, 'Evaluation instances (global).')
_PLANNER_STEPS = flags.DEFINE_integer('planner_steps', 10, 'Adam steps per plan.')
_BUDGET = flags.DEFINE_integer('budget', 4, 'Executed model actions per MPC episode (1 per '
                               'replan).')
_QUICK = flags.DEFINE_bool('quick', False, 'Seconds: test-variant model, batch 8, 2 steps, '
                           '8 instances, 2 Adam steps, budget 1.')
_CACHE_DIR = flags.DEFINE_string('compilation_cache_dir', None,
                                 'Persistent XLA compilation cache.')

HORIZON = 5


def device_counts(available: int, most: int) -> list[int]:
  """1, 2, 4, ... up to min(available, most)."""
  top = min(available, most)
  counts, d = [], 1
  while d <= top:
    counts.append(d)
    d *= 2
  return counts


def random_batch(model: Any, config: Any, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A host training batch of random windows (pixels when the encoder reads them)."""
  rng = np.random.default_rng(seed)
  t = int(config.num_hist) + 1
  size = int(config.image_size)
  batch = {'state': (32 + 10 * rng.normal(size=(batch_size, t, 2))).astype(np.float32),
           'proprio': rng.normal(size=(batch_size, t, 2)).astype(np.float32),
           'actions': rng.normal(size=(batch_size, t - 1, int(model.action_dim))).astype(
               np.float32)}
  if model.obs_key == 'pixels':
    batch['pixels'] = rng.integers(0, 256, size=(batch_size, t, size, size, 3), dtype=np.uint8)
  return batch


def time_training(step, state0, batch, mesh, steps: int) -> tuple[float, float]:
  """(compile s, steps/s) of the sharded step on `mesh`."""
  fn = parallel.shard_train_step(step, mesh)
  state = parallel.replicate(state0, mesh)
  gbatch = parallel.shard_batch(batch, mesh)
  key = parallel.replicate(jax.random.key(1), mesh)
  t0 = time.perf_counter()
  state, metrics = fn(state, gbatch, key)  # First call: compile + one step.
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = fn(state, gbatch, key)
  jax.block_until_ready((state, metrics))
  return compile_s, steps / (time.perf_counter() - t0)


def time_evaluation(fn, params, instances, mesh) -> tuple[float, float]:
  """(compile s, episodes/s) of `fn` (`mpc.sharded_evaluation`: the batched MPC evaluation with
  instances split over `mesh`)."""
  args = (parallel.replicate(params, mesh),
          *parallel.shard_batch(instances, mesh, global_batch=True))
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))  # Warm-up.
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  return compile_s, instances[0].shape[0] / (time.perf_counter() - t0)


def run(devices: int, variant: str, batch_size: int, steps: int, instances: int,
        planner_steps: int, budget: int) -> dict[str, Any]:
  """Times training and evaluation at 1, 2, 4, ... devices; returns rows and settings."""
  counts = device_counts(jax.device_count(), devices)
  for what, n in (('--batch_size', batch_size), ('--instances', instances)):
    parallel.check_divisible(n, counts[-1], what)
  config = wall.get_config(variant)
  env = envs.load('wall')
  model = training.build_world_model(training.world_model_kwargs(config, env))
  optimizer = training.make_optimizer(config.train)
  obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
  params = jax.device_get(model.init(jax.random.key(0), obs))
  state0 = jax.device_get(training.create_train_state(params, optimizer))
  step = training.make_train_step(training.teacher_forcing_loss(model), optimizer)
  batch = random_batch(model, config, batch_size)

  stats = data_lib.Stats(env.action_mean, env.action_std, jnp.full((2,), 32.0),
                         jnp.full((2,), 10.0), jnp.full((2,), 32.0), jnp.full((2,), 10.0))
  settings = dict(config.plan.adam.to_dict(), num_steps=planner_steps)
  planner = planners_lib.make_planner('adam', settings, horizon=HORIZON,
                                      action_size=int(model.action_dim))
  fs = int(config.frameskip)

  make_problem = lambda p: problems.world_model_problem(env, model, p, stats, objective='all')
  init, goal = jax.jit(jax.vmap(env.sample_problem))(
      jax.random.split(jax.random.key(2), instances))
  cases = (np.asarray(init), np.asarray(goal), jax.random.split(jax.random.key(3), instances))

  rows = []
  for d in counts:
    mesh = parallel.make_mesh(jax.devices()[:d])
    train_compile, steps_per_s = time_training(step, state0, batch, mesh, steps)
    evaluation = mpc.sharded_evaluation(env, planner, make_problem, mesh=mesh,
                                        num_replans=budget, execute=1, frameskip=fs)
    eval_compile, episodes_per_s = time_evaluation(evaluation, params, cases, mesh)
    rows.append(dict(devices=d, steps_per_s=steps_per_s, windows_per_s=steps_per_s * batch_size,
                     train_compile_s=train_compile, episodes_per_s=episodes_per_s,
                     eval_compile_s=eval_compile))
  return {'rows': rows, 'variant': variant, 'encoder': model.encoder_name,
          'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params))),
          'batch_size': batch_size, 'steps': steps, 'instances': instances,
          'planner_steps': planner_steps, 'budget': budget}


def format_table(result: dict[str, Any]) -> str:
  rows = result['rows']
  base = rows[0]
  lines = [
      f'Wall world model ({result["variant"]} sizes, {result["encoder"]} encoder, '
      f'{result["num_params"]:,} parameters, random weights); global batch '
      f'{result["batch_size"]}, {result["steps"]} timed steps; {result["instances"]} MPC '
      f'episodes of {result["budget"]} replans x Adam {result["planner_steps"]} steps, '
      f'horizon {HORIZON}.',
      '| devices | train steps/s | windows/s | x vs 1 | compile s | MPC episodes/s | x vs 1 | '
      'compile s |',
      '|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["devices"]} | {r["steps_per_s"]:.3g} | {r["windows_per_s"]:.4g} | '
        f'{r["steps_per_s"] / base["steps_per_s"]:.2f} | {r["train_compile_s"]:.3g} | '
        f'{r["episodes_per_s"]:.3g} | {r["episodes_per_s"] / base["episodes_per_s"]:.2f} | '
        f'{r["eval_compile_s"]:.3g} |')
  return '\n'.join(lines)


def main(argv):
  runtime.start(argv, cache=bool(_CACHE_DIR.value), cache_dir=_CACHE_DIR.value)
  if _QUICK.value:
    kw = dict(variant='test', batch_size=8, steps=2, instances=8, planner_steps=2, budget=1)
  else:
    kw = dict(variant=_VARIANT.value, batch_size=_BATCH.value, steps=_STEPS.value,
              instances=_INSTANCES.value, planner_steps=_PLANNER_STEPS.value,
              budget=_BUDGET.value)
  for line in machine_lib.describe():
    print(line)
  if jax.default_backend() == 'cpu' and jax.device_count() > 1:
    print(f'{jax.device_count()} forced CPU devices share {os.cpu_count()} cores: the ratios '
          'show the cost of splitting, not accelerator speed-ups.')
  print(format_table(run(_DEVICES.value, **kw)))


if __name__ == '__main__':
  app.run(main)
