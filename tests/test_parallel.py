"""Data parallelism (wmjax.parallel, wmjax.distributed): sharded == single device, two processes.

The multi-device checks run in subprocesses (tests/parallel/*.py, run as modules from the
checkout) whose environment asks XLA for forced host CPU devices before jax is imported; this
process keeps its single CPU device.
Tolerances: a sharded step sums the per-device gradient partial sums in another order than one
device does, and a vmap over fewer instances may vectorise differently, so float32 results agree
to rounding (observed ~5e-7 relative), not bit for bit.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from limits import TEST_XLA_FLAGS
from limits import TIMEOUT_S
from wmjax import distributed
from wmjax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-5


def child_env(devices: int) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}',
              WMJAX_TEST_CACHE=os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache')))


def parse_result(stdout: str) -> dict:
  lines = [l for l in stdout.splitlines() if l.startswith('RESULT ')]
  assert lines, stdout[-3000:]
  return json.loads(lines[-1][len('RESULT '):])


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# ------------------------------------------------------------------------- in this process
def test_mesh_is_one_auto_axis_over_all_devices():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.devices.size == jax.device_count()
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert parallel.batch_sharding(mesh).spec == jax.sharding.PartitionSpec('data')
  assert parallel.replicated(mesh).spec == jax.sharding.PartitionSpec()
  with pytest.raises(ValueError, match='at least one device'):
    parallel.make_mesh([])


def test_check_divisible_names_count_devices_and_fix():
  parallel.check_divisible(16, 8, 'train.batch_size')
  with pytest.raises(ValueError, match=r'train.batch_size=12 does not divide across the 8 '
                     r'devices; use a multiple of 8'):
    parallel.check_divisible(12, 8, 'train.batch_size')
  with pytest.raises(ValueError, match='plan.num_instances=3 does not divide across the 2'):
    parallel.check_divisible(3, 2, 'plan.num_instances')
  parallel.check_divisible(5, parallel.make_mesh(jax.devices()[:1]), 'any count on one device')


def test_shard_and_replicate_on_one_device():
  mesh = parallel.make_mesh()
  batch = {'x': np.arange(12.0).reshape(4, 3), 'k': jax.random.split(jax.random.key(0), 4)}
  got = parallel.shard_batch(batch, mesh)
  assert got['x'].sharding == parallel.batch_sharding(mesh)
  np.testing.assert_array_equal(got['x'], batch['x'])
  np.testing.assert_array_equal(jax.random.key_data(got['k']), jax.random.key_data(batch['k']))
  tree = parallel.replicate({'w': np.ones(3), 'n': None, 'step': 3}, mesh)
  assert tree['w'].sharding == parallel.replicated(mesh) and tree['n'] is None
  assert tree['step'] == 3
  with pytest.raises(ValueError, match='leading batch axis'):
    parallel.shard_batch({'s': np.float32(1.0)}, mesh)
  np.testing.assert_array_equal(parallel.gather(got)['x'], batch['x'])


@pytest.mark.parametrize('args,match', [
    (('127.0.0.1:1234', None, 0), 'needs num_processes'),
    (('127.0.0.1:1234', 2, None), 'needs num_processes'),
    (('127.0.0.1:1234', 2, 2), r'process_id=2 must be in \[0, num_processes=2\)'),
    (('127.0.0.1:1234', 2, -1), r'process_id=-1 must be in'),
    (('127.0.0.1:1234', 0, 0), 'num_processes must be >= 1'),
    ((None, 2, 0), 'without coordinator_address'),
    ((None, None, 1), 'without coordinator_address'),
    (('localhost', 2, 0), 'must be host:port'),
    (('auto', 0, None), 'num_processes must be >= 1'),
])
def test_bad_distributed_settings_fail_before_starting(args, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize(*args)


def test_single_process_initialize_is_a_noop():
  assert distributed.initialize() is False
  assert distributed.initialize(None, None, None) is False
  assert distributed.is_primary()
  distributed.check_settings('auto', None, None)
  distributed.check_settings('10.0.0.1:1234', 1, 0)


# ------------------------------------------------------------------------- 8 forced devices
@pytest.fixture(scope='module')
def sharded():
  proc = subprocess.run([sys.executable, '-m', 'tests.parallel.sharded_checks'],
                        capture_output=True, text=True, env=child_env(8), cwd=ROOT,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  r = parse_result(proc.stdout)
  assert r['device_count'] == 8
  return r


def test_sharded_train_step_matches_one_device(sharded):
  assert sharded['train_batch_spec'] == "P('data',)"
  assert sharded['train_batch_shard_rows'] == 2  # Global batch 16 over 8 devices.
  assert sharded['train_state_replicated'] and sharded['train_steps'] == 3
  assert sharded['train_params_moved'] > 1e-4  # The steps changed the parameters.
  assert sharded['train_params_rel'] < RTOL
  assert sharded['train_opt_rel'] < RTOL
  assert sharded['train_loss_rel'] < RTOL


def test_training_binary_functions_on_a_mesh_match_one_device(sharded):
  assert sharded['binary_params_rel'] < RTOL
  assert sharded['binary_val_rel'] < RTOL
  assert sharded['binary_eval_rel'] < RTOL


@pytest.mark.parametrize('planner,shape', [('adam', [8, 3, 2]), ('cem', [8, 6, 2])])
def test_sharded_evaluation_matches_unsharded_per_instance(sharded, planner, shape):
  assert sharded[f'eval_{planner}_type'] == 'ndarray'  # Gathered to host, like device_get.
  assert sharded[f'eval_{planner}_shape'] == shape  # (N, replans * executed + 1, S).
  assert sharded[f'eval_{planner}_success_equal']
  for field in ('states', 'plans', 'distance'):
    assert sharded[f'eval_{planner}_{field}_rel'] < RTOL, field


def test_plan_binary_on_eight_devices_matches_one(sharded):
  assert sharded['plan_instances'] == 8 and sharded['plan_success_equal']
  assert sharded['plan_distance_rel'] < RTOL


@pytest.mark.parametrize('method', ['adversarial', 'online'])
def test_finetune_steps_on_eight_devices_match_one(sharded, method):
  assert sharded[f'finetune_{method}_params_rel'] < RTOL
  assert sharded[f'finetune_{method}_extra_rel'] < RTOL


# ------------------------------------------------------------------------- two processes
def test_two_process_job_trains_and_agrees():
  port = free_port()
  procs = [subprocess.Popen([sys.executable, '-m', 'tests.parallel.two_process', str(i),
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env(2), cwd=ROOT) for i in range(2)]
  outs = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=TIMEOUT_S)
      assert p.returncode == 0, stdout[-2000:] + stderr[-4000:]
      outs.append(parse_result(stdout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  a, b = outs
  assert (a['process_index'], b['process_index']) == (0, 1)
  assert a['primary'] and not b['primary']
  for r in outs:
    assert r['process_count'] == 2 and r['device_count'] == 4 and r['local_device_count'] == 2
    assert r['steps'] == 3 and r['eval_shape'] == [4, 2, 2]
    assert r['params_rel_vs_one_device'] < RTOL
    assert r['eval_rel_vs_one_device'] < RTOL
  assert a['params_fingerprint'] == b['params_fingerprint']  # Bit for bit the same params.
  assert a['loss'] == b['loss']
  assert a['eval_fingerprint'] == b['eval_fingerprint']


# ------------------------------------------------------------------------- benchmark
def test_scaling_benchmark_quick_prints_table():
  cache = os.environ.get('WMJAX_TEST_CACHE', os.path.join(ROOT, '.jax_cache'))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=TEST_XLA_FLAGS)  # The script adds the host devices it asks for.
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'scaling.py'), '--quick', '--devices=2',
       f'--compilation_cache_dir={cache}'],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert 'jax_default_matmul_precision' in out and '2 x cpu' in out
  assert '| devices | train steps/s | windows/s | x vs 1 |' in out
  rows = [l for l in out.splitlines() if l.startswith('| 1 |') or l.startswith('| 2 |')]
  assert len(rows) == 2, out
  assert rows[0].split('|')[4].strip() == '1.00'  # Ratio of one device to itself.
  for row in rows:
    cells = [c.strip() for c in row.split('|')[1:-1]]
    assert all(float(c) > 0 for c in cells), row
