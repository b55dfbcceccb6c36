"""Run-directory file safety: atomic writes, stage-done markers, the workdir lock, checks."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from wmjax import checks
from wmjax import io


def dead_pid():
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def test_atomic_write_replaces_whole_files_only(tmp_path):
  path = str(tmp_path / 'out' / 'results.json')
  io.write_json(path, {'a': 1})
  assert io.read_json(path) == {'a': 1}
  with pytest.raises(RuntimeError):
    with io.atomic_path(path) as tmp:
      assert tmp.endswith('.json') and io.is_temporary(tmp)
      with open(tmp, 'w') as f:
        f.write('{"a": ')  # Half written, then the writer fails.
      raise RuntimeError('killed')
  assert io.read_json(path) == {'a': 1}  # The old content, whole.
  assert os.listdir(tmp_path / 'out') == ['results.json']


def test_read_json_names_a_damaged_file(tmp_path):
  path = str(tmp_path / 'results.json')
  with open(path, 'w') as f:
    f.write('{"success_rate": 0.')
  with pytest.raises(io.CorruptFileError, match=f'{path} is corrupt or truncated'):
    io.read_json(path)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
  dead, alive = dead_pid(), os.getpid()
  (tmp_path / 'sub').mkdir()
  stale_dir = tmp_path / f'.dataset.tmp-{dead}-0123456789abcdef'
  stale_dir.mkdir()
  (stale_dir / 'arrays.npz').write_bytes(b'x' * 1000)
  stale_file = tmp_path / 'sub' / f'.results.json.tmp-{dead}-0123456789abcdef.json'
  stale_file.write_text('{')
  live = tmp_path / f'.other.tmp-{alive}-0123456789abcdef'
  live.write_text('being written')
  keep = tmp_path / '.hidden'
  keep.write_text('not a temporary')
  removed = io.clean_stale_temporaries(str(tmp_path))
  assert sorted(removed) == sorted([str(stale_dir), str(stale_file)])
  assert live.exists() and keep.exists()


def test_done_marker_vouches_for_the_files_it_lists(tmp_path):
  d = str(tmp_path)
  assert 'does not exist' in io.done_problem(d)
  io.write_json(os.path.join(d, 'results.json'), {'x': 1})
  io.mark_done(d, ['results.json'], step=3)
  assert io.is_done(d)
  with open(os.path.join(d, 'results.json'), 'w') as f:
    f.write('{"x": 2}')
  assert 'results.json was changed or corrupted' in io.done_problem(d)
  os.remove(os.path.join(d, 'results.json'))
  assert 'results.json is missing' in io.done_problem(d)
  with open(os.path.join(d, io.DONE_FILE), 'w') as f:
    f.write('{"files": ')
  assert 'corrupt or truncated' in io.done_problem(d)
  io.clear_done(d)
  assert not os.path.exists(os.path.join(d, io.DONE_FILE))


def _fake_lock(workdir, pid, host=None):
  with open(os.path.join(workdir, io.LOCK_FILE), 'w') as f:
    json.dump({'pid': pid, 'host': host or socket.gethostname(), 'start_time': None,
               'command': 'train_world_model', 'created': 'earlier'}, f)


def test_workdir_lock(tmp_path):
  wd = str(tmp_path / 'run')
  with io.workdir_lock(wd, 'first') as record:
    assert io.read_lock(wd) == record and record['pid'] == os.getpid()
    with io.workdir_lock(wd, 'nested'):  # Re-entrant in one process.
      pass
    assert io.read_lock(wd) == record  # The nested exit did not release it.
  assert io.read_lock(wd) is None
  # Held by another live process on this host, or by any process on another host: refused.
  _fake_lock(wd, os.getppid())
  with pytest.raises(io.WorkdirLockedError, match=f'pid {os.getppid()} .*it still runs'):
    with io.workdir_lock(wd, 'second'):
      pass
  _fake_lock(wd, 1, host='elsewhere.example')
  with pytest.raises(io.WorkdirLockedError, match='runs on another host'):
    with io.workdir_lock(wd, 'second'):
      pass
  # Held by a process that has exited: stale, taken over, released at the end.
  _fake_lock(wd, dead_pid())
  with pytest.warns(UserWarning, match='stale lock'):
    with io.workdir_lock(wd, 'third') as record:
      assert io.read_lock(wd)['command'] == 'third'
  assert io.read_lock(wd) is None
  # A pid reused by another process is told apart by its start time.
  with open(os.path.join(wd, io.LOCK_FILE), 'w') as f:
    json.dump({'pid': os.getppid(), 'host': socket.gethostname(), 'start_time': -1,
               'command': 'old', 'created': 'earlier'}, f)
  with pytest.warns(UserWarning, match='stale lock'):
    with io.workdir_lock(wd, 'fourth'):
      pass
  with io.workdir_lock(wd, 'disabled', enabled=False) as record:
    assert record is None and io.read_lock(wd) is None


def test_finite_checks():
  tree = {'a': np.ones(3), 'b': {'c': np.array([1.0, np.nan, np.inf])}, 'i': np.arange(3)}
  (entry,) = checks.nonfinite_leaves(tree)
  assert entry.startswith('b/c: 2 non-finite of 3 (first at index (1,))')
  assert checks.nonfinite_numbers({'x': {'lr': float('nan')}, 'y': [1.0, float('inf')]}) == [
      'x.lr=nan', 'y[1]=inf']
  assert checks.range_problem(0.5, 'p', low=0, high=1) is None
  assert 'p must be a finite number > 0; got 0.0' == checks.range_problem(0.0, 'p', low=0,
                                                                          low_open=True)
  assert 'got nan' in checks.range_problem(float('nan'), 'p', low=0)
  assert checks.config_problems({'t': {'lr': float('nan'), 'wd': float('inf')}},
                                {'t.lr': {'low': 0}}) == [
      't.lr must be a finite number >= 0; got nan',
      't.wd=inf: numbers in the config must be finite']
