"""Throughput of the tasks: batched env steps/s and rendered images/s, beside C MuJoCo.

For each task and batch size B: env steps/s of `jit(scan(vmap(step)))` over T steps and
images/s of `jit(vmap(render))`, with compile time reported apart from run time (best
of --repeats timed runs). The MJX tasks are compared with single-thread C MuJoCo on the
same MJCF model (`mujoco.mj_step` in a Python loop, and `mujoco.rollout` on one
thread), counted in physics steps (one env step = `substeps` physics steps); the
pure-JAX Wall with a NumPy loop of the same rule.

  python benchmarks/envs.py                  # batch sizes 1, 64, 1024
  python benchmarks/envs.py --quick          # seconds: tiny sizes (used by tests)
  python benchmarks/envs.py --tasks=wall,pointmaze --batch_sizes=1,256
"""

import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from wmjax import machine as machine_lib
from wmjax.envs import wall

_TASKS = flags.DEFINE_list('tasks', None, 'Tasks to measure (default: all registered).')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '64', '1024'], 'Batch sizes.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Env steps per timed scan.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Rendered image side.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repeats (best is reported).')
_C_STEPS = flags.DEFINE_integer('c_steps', 20000, 'Physics steps of the C MuJoCo baselines.')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Tiny sizes (one batch of 4, 5 steps): seconds plus one compile per task.')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None,
    'Persistent XLA compilation cache (reported compile times then include cache hits).')


def _machine_info() -> None:
  import mujoco  # pylint: disable=g-import-not-at-top
  for k, v in machine_lib.machine_info().items():
    print(f'{k}: {v}')
  print(f'mujoco: {mujoco.__version__}')


def _best(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return min(times)


def _compile(fn, *args):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def bench_jax(env, batch: int, steps: int, image_size: int, repeats: int) -> dict:
  """Env steps/s and images/s of one task at one batch size."""
  keys = jax.random.split(jax.random.key(0), batch)
  states = jax.jit(jax.vmap(env.reset))(keys)
  actions = jax.random.uniform(jax.random.key(1), (steps, batch, env.action_size),
                               minval=env.action_low, maxval=env.action_high)

  def rollout(states, actions):
    def body(s, a):
      return jax.vmap(env.step)(s, a), None
    final, _ = jax.lax.scan(body, states, actions)
    return jax.vmap(env.state_vector)(final)

  step_fn, step_compile = _compile(rollout, states, actions)
  step_time = _best(lambda: step_fn(states, actions), repeats)

  svs = jax.vmap(env.state_vector)(states)
  render_fn, render_compile = _compile(
      lambda s: jax.vmap(lambda v: env.render(v, image_size))(s), svs)
  render_time = _best(lambda: render_fn(svs), repeats)
  return {
      'steps_per_s': batch * steps / step_time, 'step_compile_s': step_compile,
      'images_per_s': batch / render_time, 'render_compile_s': render_compile,
  }


def _mj_model(env):
  for attr in ('mj_model', '_mj_model'):
    if hasattr(env, attr):
      return getattr(env, attr)
  return None


def bench_c_mujoco(mj_model, n: int) -> dict:
  """Single-thread C MuJoCo physics steps/s: Python mj_step loop and mujoco.rollout."""
  import mujoco  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  data = mujoco.MjData(mj_model)
  lo, hi = mj_model.actuator_ctrlrange[:, 0], mj_model.actuator_ctrlrange[:, 1]
  ctrl = rng.uniform(lo, hi, (n, mj_model.nu))
  t0 = time.perf_counter()
  for i in range(n):
    data.ctrl[:] = ctrl[i]
    mujoco.mj_step(mj_model, data)
  out = {'c_loop_steps_per_s': n / (time.perf_counter() - t0)}
  try:
    from mujoco import rollout  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  data = mujoco.MjData(mj_model)
  spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
  state = np.zeros(mujoco.mj_stateSize(mj_model, spec))
  mujoco.mj_getState(mj_model, data, state, spec)
  rollout.rollout(mj_model, data, state[None], ctrl[None, :10])  # Warm-up.
  t0 = time.perf_counter()
  rollout.rollout(mj_model, data, state[None], ctrl[None])
  out['c_rollout_steps_per_s'] = n / (time.perf_counter() - t0)
  return out


def bench_numpy_wall(n: int) -> dict:
  rng = np.random.default_rng(0)
  acts = rng.uniform(-1, 1, (n, 2))
  p = np.array([20.0, 30.0])
  t0 = time.perf_counter()
  for i in range(n):
    p = wall.move_numpy(p, acts[i])
  return {'numpy_loop_steps_per_s': n / (time.perf_counter() - t0)}


def main(argv):
  del argv  # Unused.
  logging.set_verbosity(logging.WARNING)
  if _CACHE_DIR.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  from wmjax import envs  # pylint: disable=g-import-not-at-top
  tasks = _TASKS.value or list(envs.ALL_ENVS)
  batches = [int(b) for b in _BATCH_SIZES.value]
  steps, repeats, c_steps = _STEPS.value, _REPEATS.value, _C_STEPS.value
  if _QUICK.value:
    batches, steps, repeats, c_steps = [4], 5, 1, 500
  _machine_info()
  print(f'batch sizes {batches}, {steps} env steps per scan, images {_IMAGE_SIZE.value}px, '
        f'best of {repeats}')
  for name in tasks:
    try:
      env = envs.load(name)
    except ImportError as e:
      print(f'\n== {name}: not available ({e})')
      continue
    mj_model = _mj_model(env)
    substeps = round(env.dt / mj_model.opt.timestep) if mj_model is not None else 1
    print(f'\n== {name} (S={env.state_size}, one env step = {substeps} physics step(s))')
    if mj_model is not None:
      base = bench_c_mujoco(mj_model, c_steps)
      ref_name = 'c_rollout_steps_per_s' if 'c_rollout_steps_per_s' in base else \
          'c_loop_steps_per_s'
      for k, v in base.items():
        print(f'  {k:28s} {v:12,.0f} physics steps/s = {v / substeps:12,.0f} env steps/s')
    else:
      base = bench_numpy_wall(c_steps)
      ref_name = 'numpy_loop_steps_per_s'
      print(f'  numpy loop (1 instance)      {base[ref_name]:12,.0f} env steps/s')
    ref_env_steps = base[ref_name] / substeps
    print(f'  {"batch":>6s} {"env steps/s":>13s} {"x " + ref_name.split("_steps")[0]:>16s} '
          f'{"compile s":>10s} {"images/s":>11s} {"compile s":>10s}')
    for batch in batches:
      r = bench_jax(env, batch, steps, _IMAGE_SIZE.value, repeats)
      print(f'  {batch:6d} {r["steps_per_s"]:13,.0f} {r["steps_per_s"] / ref_env_steps:16.2f} '
            f'{r["step_compile_s"]:10.1f} {r["images_per_s"]:11,.0f} '
            f'{r["render_compile_s"]:10.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
