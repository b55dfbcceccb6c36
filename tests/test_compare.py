"""Rows side by side (wmjax.experiment.compare, experiments/compare_runs.py): paired counts, the
sign test, refusals of rows that cannot be paired, and the binary's outputs."""

import json
import os
import subprocess
import sys

import pytest
from limits import TIMEOUT_S

from wmjax.experiment import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, solved, task='wall', planner='adam', model='world_model', shift=0.0, seconds=2.0,
           costs=None):
  """A results.json of len(solved) problems; problem i starts at (i + shift, 0); `costs`: each
  problem's (first_plan_cost, first_plan_realized_cost), or None for a row without them."""
  os.makedirs(path, exist_ok=True)
  inst = [dict(index=i, success=bool(s), init_state=[i + shift, 0.0], goal_state=[1.0, 2.0])
          for i, s in enumerate(solved)]
  for i, c in zip(inst, costs or ()):
    i.update(first_plan_cost=c[0], first_plan_realized_cost=c[1])
  r = dict(task=task, num_instances=len(solved), num_success=int(sum(solved)),
           protocol=dict(planner=planner, model=model, mode='mpc', settings=f'{planner} budget'),
           timing=dict(seconds_per_instance_amortised=seconds), instances=inst)
  with open(os.path.join(path, 'results.json'), 'w') as f:
    json.dump(r, f)
  return str(path)


def test_sign_test_matches_the_binomial():
  assert compare.sign_test_p(0, 0) == 1.0
  assert compare.sign_test_p(3, 3) == 1.0
  assert compare.sign_test_p(0, 10) == pytest.approx(2 / 1024)
  assert compare.sign_test_p(4, 1) == compare.sign_test_p(1, 4) == pytest.approx(2 * 6 / 32)


def test_paired_counts_on_the_problems_both_rows_ran(tmp_path):
  base = compare.load('cem', _write(tmp_path / 'cem', [1, 1, 1, 0, 0, 1], planner='cem'))
  adam = compare.load('adam', _write(tmp_path / 'adam', [1, 0, 0, 1, 0, 1, 1, 1]))
  assert (base.n, base.num_success, adam.n, adam.num_success) == (6, 4, 8, 5)
  p = compare.paired(base, adam)  # Problems 0-5: both 0 and 5; adam alone 3; cem alone 1, 2.
  assert p == dict(common=6, gained=1, lost=2, both=2, p=compare.sign_test_p(1, 2))
  table = compare.markdown([base, adam], baseline='cem')
  assert '| adam | adam budget | world_model | mpc | 62 [31-86] | 8 | 2 | - / - | 1 / 2 (6; p = 1) |' in table
  assert '| cem | cem budget | world_model | mpc | 67 [30-90] | 6 | 2 | - / - | (baseline) |' in table


def test_first_plan_costs_predicted_and_realized(tmp_path):
  """Medians over the finite costs; a ceiling's own cost is a realized one."""
  model = compare.load('m', _write(tmp_path / 'm', [1, 0, 0], costs=[
      (0.1, 0.5), (0.2, float('nan')), (0.3, 0.7)]))
  ceiling = compare.load('s', _write(tmp_path / 's', [1, 1, 0], model='simulator', costs=[
      (0.05, None), (0.01, None), (0.4, None)]))
  assert (model.predicted_cost, model.realized_cost) == (0.2, 0.6)
  assert (ceiling.predicted_cost, ceiling.realized_cost) == (None, 0.05)
  table = compare.markdown([model, ceiling])
  assert '| 2 | 0.2 / 0.6 |' in table and '| 2 | - / 0.05 |' in table
  assert compare.summary([model])[0]['first_plan_cost_median'] == dict(predicted=0.2,
                                                                      realized=0.6)


def test_rows_that_cannot_be_paired_are_refused(tmp_path):
  base = compare.load('a', _write(tmp_path / 'a', [1, 0, 1]))
  other_seed = compare.load('b', _write(tmp_path / 'b', [1, 0, 1], shift=0.5))
  other_task = compare.load('c', _write(tmp_path / 'c', [1, 0, 1], task='pusht'))
  with pytest.raises(ValueError, match='different problems at index 0'):
    compare.paired(base, other_seed)
  with pytest.raises(ValueError, match='different tasks'):
    compare.paired(base, other_task)
  with pytest.raises(ValueError, match=r"Unknown baseline 'z'; choose one of \['a', 'b'\]"):
    compare.markdown([base, other_seed], baseline='z')
  assert 'paired' not in compare.markdown([base, other_seed])  # Side by side without pairing.
  rounded = compare.load('d', _write(tmp_path / 'd', [0, 0, 1], shift=3e-4))  # Another batch size.
  assert compare.paired(base, rounded)['lost'] == 1


def test_bad_files_get_errors_that_name_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="Row 'x': no results.json at"):
    compare.load('x', str(tmp_path / 'missing'))
  (tmp_path / 'bad.json').write_text('{"task": ')
  with pytest.raises(ValueError, match='is not valid JSON'):
    compare.load('x', str(tmp_path / 'bad.json'))
  (tmp_path / 'other.json').write_text('{"task": "wall"}')
  with pytest.raises(ValueError, match='not a planning results.json .missing num_instances'):
    compare.load('x', str(tmp_path / 'other.json'))
  path = _write(tmp_path / 'edited', [1, 0])
  r = json.load(open(os.path.join(path, 'results.json')))
  r['num_success'] = 2
  json.dump(r, open(os.path.join(path, 'results.json'), 'w'))
  with pytest.raises(ValueError, match='inconsistent: 2 instances with 1 solved'):
    compare.load('x', path)


def test_binary_writes_table_json_and_figure(tmp_path):
  a = _write(tmp_path / 'cem', [1, 1, 0, 1], planner='cem')
  b = _write(tmp_path / 'sim', [1, 1, 1, 1], planner='cem', model='simulator')
  out = tmp_path / 'out'
  cmd = [sys.executable, 'experiments/compare_runs.py', '--out_dir', str(out), '--baseline', 'cem',
         '--run', f'cem={a}', '--run', f'ceiling={b}/results.json']
  done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert done.returncode == 0, done.stderr
  assert '| ceiling | cem budget | simulator | mpc | 100 [51-100] | 4 | 2 | - / - | 1 / 0 (4; p = 1) |' in (
      out / 'compare.md').read_text()
  rows = json.loads((out / 'compare.json').read_text())['rows']
  assert [r['label'] for r in rows] == ['cem', 'ceiling'] and rows[1]['paired']['gained'] == 1
  assert (out / 'compare.png').stat().st_size > 0
  bad = subprocess.run(cmd[:-2] + ['--run', 'cem=' + a], capture_output=True, text=True, cwd=ROOT,
                       timeout=TIMEOUT_S, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert bad.returncode == 1 and bad.stderr.count('\n') == 1, bad.stderr
  assert bad.stderr.startswith("compare_runs.py: error: --run: the label 'cem' is given twice")
