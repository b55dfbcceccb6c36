r"""How close latent rollouts run to this machine's matmul rate.

Planning through a world model is mostly predictor FLOPs: a CEM plan rolls out its whole
population every iteration. This times, in one process, `jit(vmap(model.rollout))` for --batch
rollouts of --horizon steps (history and one-frame) of a task config's model (random weights;
the rate does not depend on them) and a square float32 matmul of side --matmul, and reports for
each its FLOPs (`benchmarks/gpu.py`'s `rollout_flops`, XLA's cost analysis), the best of
--repeats runs, GFLOP/s and the fraction of the matmul's rate. With the rollout near the matmul
rate, a planner can only get faster by doing fewer FLOPs. --dtypes adds rows for the predictor
computing in other dtypes (the same random float32 weights), side by side in the same process.

  python benchmarks/rollout_rate.py                        # PushT cpu model, 600 rollouts
  python benchmarks/rollout_rate.py --task wall --batch 3000
  python benchmarks/rollout_rate.py --dtypes float32,bfloat16
  python benchmarks/rollout_rate.py --quick                # seconds: test config (used by tests)
"""

import importlib
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

import gpu as gpu_bench  # benchmarks/gpu.py, beside this script: its FLOP counting.
from wmjax import envs
from wmjax import machine as machine_lib
from wmjax.training import checkpoint

_TASK = flags.DEFINE_enum('task', 'pusht', ['wall', 'pointmaze', 'pusht'], 'Task config.')
_VARIANT = flags.DEFINE_enum('variant', 'cpu', ['test', 'cpu', 'gpu'], 'Config variant.')
_BATCH = flags.DEFINE_integer('batch', 600, 'Rollouts per call (CEM: samples x instances).')
_HORIZON = flags.DEFINE_integer('horizon', 5, 'Steps per rollout.')
_MATMUL = flags.DEFINE_integer('matmul', 1024, 'Side of the reference float32 matmul.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs after a warm-up (best is reported).')
_DTYPES = flags.DEFINE_list('dtypes', ['float32'],
                            'Predictor computation dtypes, one row pair each (float32, bfloat16).')
_QUICK = flags.DEFINE_bool('quick', False, 'Test config, 8 rollouts, a 128 matmul, 2 runs.')


DTYPES = ('float32', 'bfloat16')


def _best(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return min(times)


def main(argv):
  del argv
  quick = _QUICK.value
  variant = 'test' if quick else _VARIANT.value
  batch, side = (8, 128) if quick else (_BATCH.value, _MATMUL.value)
  repeats = 2 if quick else _REPEATS.value
  for k, v in machine_lib.machine_info().items():
    print(f'{k}: {v}')
  dtypes = _DTYPES.value
  if not dtypes or set(dtypes) - set(DTYPES):
    raise app.UsageError(f'--dtypes={",".join(dtypes)}: choose from {", ".join(DTYPES)}.')
  config = importlib.import_module(f'experiments.configs.{_TASK.value}').get_config(variant)
  env = envs.load(_TASK.value)
  x = jax.random.normal(jax.random.key(3), (side, side))
  matmul_flops = 2.0 * side**3
  matmul_s = _best(jax.jit(lambda x: x @ x), x, repeats=2 * repeats)
  rate = matmul_flops / matmul_s
  print(f'model: random {_TASK.value} {variant} model, num_hist {config.num_hist}, '
        f'{batch} rollouts x {_HORIZON.value} steps')
  print('| program | GFLOP | best s | GFLOP/s | of the matmul rate |')
  print('|---|---|---|---|---|')
  print(f'| matmul {side} x {side} float32 | {matmul_flops / 1e9:.3g} | {matmul_s:.4g} | '
        f'{rate / 1e9:.1f} | 100% |')
  for dtype in dtypes:
    config.model.predictor.dtype = dtype
    model = checkpoint.build_world_model(checkpoint.world_model_kwargs(config, env))
    obs = {k: jnp.zeros(s.shape, s.dtype) for k, s in model.obs_spec.items()}
    params = model.init(jax.random.key(0), obs)
    z0 = gpu_bench.random_latents(model, jax.random.key(1), (batch,))
    actions = jax.random.normal(jax.random.key(2), (batch, _HORIZON.value, model.action_dim))
    suffix = '' if dtype == 'float32' else f', {dtype}'
    for mode in ('history', 'markov'):
      fn = jax.jit(jax.vmap(lambda z, a, mode=mode: model.rollout(params, z, a, mode)))
      seconds = _best(fn, z0, actions, repeats=repeats)
      flops = gpu_bench.rollout_flops(model, params, batch, _HORIZON.value, mode)
      name = f'{mode} rollout{suffix}'
      if flops is None:
        print(f'| {name} | n/a | {seconds:.4g} | n/a | n/a |')
        continue
      print(f'| {name} | {flops / 1e9:.3g} | {seconds:.4g} | {flops / seconds / 1e9:.1f} | '
            f'{flops / seconds / rate:.0%} |')


if __name__ == '__main__':
  app.run(main)
