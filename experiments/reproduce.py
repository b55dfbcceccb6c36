r"""Reproduces the paper's comparison end to end (PAPER.md section 6) on our tasks.

  python experiments/reproduce.py --config experiments/configs/reproduce.py:cpu --workdir runs/repro

For each task: generate data, train the base world model, finetune it with AWM and with OWM,
measure the train-test gap, then evaluate planners on every model: GD, Adam and CEM, open loop and
under MPC (the grid of Table 1), MPPI and GradCEM, the true-dynamics ceiling (the simulator as the
model), Adam with bounded actions, and a budget sweep for success-vs-time curves. Every planner gets
the same executed-step budget per episode and the same problems and seeds (rows the config sizes
down run on the first n of them; the tables then give Adam's and CEM's success on those n).

Layout: `<workdir>/<task>/` is an ordinary run directory (dataset/, world_model/,
finetune_<method>/, diagnose/, plan/<model>/<row>/); each stage is skipped when its output exists,
so an interrupted run continues where it stopped. Outputs: `<workdir>/results.json`,
`<workdir>/results.md` (tables with 95% intervals, budgets, seeds and timing, beside the published
numbers) and `<workdir>/<task>/success_vs_time.png`.
"""

import copy
import fnmatch
import importlib
import os
import time
from typing import Any

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments import cli
from experiments import diagnose_gap
from experiments import finetune as finetune_lib
from experiments import generate_data
from experiments import plan as plan_lib
from experiments import planners as planners_lib
from experiments import runtime
from experiments import train_world_model as train_lib
from wmjax import data as data_lib
from wmjax import envs
from wmjax import io
from wmjax import machine as machine_lib

MODEL_LABELS = {'base': 'base', 'adversarial': 'AWM', 'online': 'OWM'}
# PAPER.md section 6 (arXiv v1 Table 1): success % for GD / Adam / CEM; None where not published.
PUBLISHED = {
    'pusht': {('base', 'open_loop'): (38, 54, 78), ('base', 'mpc'): (56, 76, 92),
              ('online', 'mpc'): (50, 76, 92), ('adversarial', 'open_loop'): (56, 82, 94),
              ('adversarial', 'mpc'): (66, 92, 92)},
    'pointmaze': {('base', 'open_loop'): (12, 24, 90), ('base', 'mpc'): (42, 68, 90),
                  ('online', 'mpc'): (54, 88, 96), ('adversarial', 'open_loop'): (32, 70, 88),
                  ('adversarial', 'mpc'): (50, 94, 98)},
    'wall': {('base', 'open_loop'): (2, 10, 74), ('base', 'mpc'): (12, 80, 82),
             ('online', 'mpc'): (38, 80, 90), ('adversarial', 'open_loop'): (32, 34, 30),
             ('adversarial', 'mpc'): (14, 94, 94)},
}


def define_flags() -> tuple[Any, Any]:
  config = config_flags.DEFINE_config_file(
      'config', None, 'Reproduction config, e.g. experiments/configs/reproduce.py:cpu.',
      lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Output directory (one run dir per task).')
  flags.mark_flags_as_required(['config', 'workdir'])
  return config, workdir


def task_config(rc: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
  """The task's config at the reproduction's variant, with the scale's overrides applied."""
  if task not in envs.ALL_ENVS:
    raise ValueError(f'Unknown task {task!r}; choose from {envs.ALL_ENVS}.')
  module = importlib.import_module(f'experiments.configs.{task}')
  c = module.get_config(rc.task_variant)
  for section, fields in rc.overrides.items():
    if section not in c:
      raise ValueError(f'reproduce override: the {task} config has no section {section!r}.')
    for leaf, value in fields.items():
      if leaf not in c[section]:
        raise ValueError(f'reproduce override: the {task} config has no field '
                         f'{section}.{leaf}.')
      c[section][leaf] = value
  c.plan.seed = int(rc.seed)
  return c


# ------------------------------------------------------------------------------------ rows
def rows(rc: ml_collections.ConfigDict, task: str, skip: bool = True) -> list[dict[str, Any]]:
  """Every planning evaluation of a task, cheapest planners first (without those `rc.skip`
  names, unless `skip` is False): {'model', 'planner', 'mode', 'kind', 'factor', 'bounded',
  'simulator', 'instances', 'name'}; `name` is its folder under plan/ and `instances` its number
  of problems (None: the task's plan.num_instances)."""
  out = []

  def add(model, planner, mode, kind, factor=1.0, bounded=False, simulator=False):
    suffix = '' if factor == 1.0 else f'_x{factor:g}'
    suffix += '_bounded' if bounded else ''
    name = f'{model}/{planner}_{mode}{suffix}'
    instances = next((int(n) for pattern, n in rc.instances
                      if fnmatch.fnmatchcase(f'{task}/{name}', pattern)), None)
    out.append(dict(model=model, planner=planner, mode=mode, kind=kind, factor=factor,
                    bounded=bounded, simulator=simulator, instances=instances, name=name))

  for planner in rc.planners:
    for model in rc.models:
      for mode in rc.modes:
        add(model, planner, mode, 'grid')
  for model in rc.baseline_models:
    for planner in rc.baselines:
      add(model, planner, 'mpc', 'baseline')
  for model in rc.bounded_models:
    for planner in rc.bounded:
      add(model, planner, 'mpc', 'bounded', bounded=True)
  for planner in rc.ceiling:
    add('simulator', planner, 'mpc', 'ceiling', simulator=True)
  for model in rc.sweep_models:
    for planner, factors in rc.sweep.items():
      for f in factors:
        add(model, planner, 'mpc', 'sweep', factor=float(f))
  names = [r['name'] for r in out]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'The reproduce config lists these evaluations twice: {dupes}.')
  return [r for r in out if not skip
          or not any(fnmatch.fnmatchcase(f'{task}/{r["name"]}', p) for p in rc.skip)]


def check_config(rc: ml_collections.ConfigDict) -> None:
  errors = []
  for task in rc.tasks:
    if task not in envs.ALL_ENVS:
      errors.append(f'tasks: unknown task {task!r}; choose from {envs.ALL_ENVS}')
  for model in tuple(rc.models) + tuple(rc.sweep_models):
    if model not in MODEL_LABELS:
      errors.append(f'unknown model {model!r}; choose from {tuple(MODEL_LABELS)}')
  for field in ('sweep_models', 'baseline_models', 'bounded_models'):
    for model in rc[field]:
      if model not in rc.models:
        errors.append(f'{field} has {model!r}, which is not in models {tuple(rc.models)}')
  for entry in rc.instances:
    if len(entry) != 2 or not isinstance(entry[0], str) or int(entry[1]) < 1:
      errors.append(f'instances: each entry must be (pattern, n >= 1); got {entry!r}')
  for mode in rc.modes:
    if mode not in plan_lib.MODES:
      errors.append(f'unknown mode {mode!r}; choose from {plan_lib.MODES}')
  for field in ('planners', 'baselines', 'ceiling', 'bounded', 'sweep'):
    for name in rc[field]:
      if name not in planners_lib.PLANNERS:
        errors.append(f'{field}: unknown planner {name!r}; choose from {planners_lib.PLANNERS}')
  for name, factors in rc.sweep.items():
    if any(not float(f) > 0 for f in factors):
      errors.append(f'sweep[{name!r}] factors must be > 0; got {tuple(factors)}')
  if errors:
    raise ValueError('Invalid reproduce config:\n  ' + '\n  '.join(errors))
  # Patterns may name any task (a run restricted to some tasks keeps the others' patterns).
  every = [f'{task}/{r["name"]}' for task in envs.ALL_ENVS
           for r in rows(rc, task, skip=False)]
  for field, patterns in (('skip', rc.skip), ('instances', [p for p, _ in rc.instances])):
    for pattern in patterns:
      if not fnmatch.filter(every, pattern):
        errors.append(f'{field}: pattern {pattern!r} matches no row (rows are '
                      f'<task>/<model>/<planner>_<mode>[_x<factor>][_bounded], e.g. {every[0]})')
  if errors:
    raise ValueError('Invalid reproduce config:\n  ' + '\n  '.join(errors))


def row_config(c: ml_collections.ConfigDict, row: dict[str, Any]) -> ml_collections.ConfigDict:
  """The task config of one evaluation row."""
  c = copy.deepcopy(c)
  p = c.plan
  p.planner, p.mode, p.bounded = row['planner'], row['mode'], bool(row['bounded'])
  p.model = 'simulator' if row['simulator'] else 'world_model'
  p.run_name = row['name']
  # Finetuned models are evaluated as the recipe ends (their last step); the base model at its
  # best validation loss.
  p.checkpoint = 'best' if row['model'] in ('base', 'simulator') else 'latest'
  if row.get('instances'):  # The first n of the same problems (plan.seed keys problem i).
    if int(row['instances']) > int(p.num_instances):
      raise ValueError(f'{row["name"]}: {row["instances"]} problems is more than the task\'s '
                       f'plan.num_instances={p.num_instances}.')
    p.num_instances = int(row['instances'])
    p.num_videos = min(int(p.num_videos), p.num_instances)
  f = row['factor']
  if f != 1.0:
    s = p[row['planner']]
    if 'num_steps' in s and 'num_samples' not in s:  # Gradient planners: steps x f.
      s.num_steps = max(1, int(round(s.num_steps * f)))
    else:  # Sampling planners: population and elites x f, iterations kept.
      s.num_samples = max(2, int(round(s.num_samples * f)))
      s.num_elites = max(1, min(s.num_samples, int(round(s.num_elites * f))))
  return c


def checkpoint_dir(taskdir: str, model: str) -> str:
  """The model's checkpoint; the simulator ceiling scores states with the base model's (frozen,
  shared) encoder, so its cost is the one every world-model row minimises."""
  if model in ('base', 'simulator'):
    return os.path.join(taskdir, train_lib.OUT_DIR)
  return os.path.join(taskdir, finetune_lib.OUT_PREFIX + model)


# ------------------------------------------------------------------------------------ stages
def run_task(rc, task: str, workdir: str, say=print) -> dict[str, Any]:
  """All stages of one task (each skipped when its done marker vouches for its outputs);
  returns the task's results."""
  c = task_config(rc, task)
  taskdir = os.path.join(workdir, task)
  os.makedirs(taskdir, exist_ok=True)
  try:
    timings = _load_json(os.path.join(taskdir, 'stage_seconds.json')) or {}
  except io.CorruptFileError as e:
    say(f'[{task}] {e} Stage times start over.')
    timings = {}

  def stage(name, directory, fn):
    problem = 'always run' if directory is None else io.done_problem(directory)
    if problem is None:
      say(f'[{task}] {name}: done already, skipped')
      return
    if directory is not None and os.path.exists(os.path.join(directory, io.DONE_FILE)):
      say(f'[{task}] {name}: not done after all ({problem}); running it again')
    say(f'[{task}] {name} ...')
    t0 = time.perf_counter()
    result = fn()
    if isinstance(result, dict) and result.get('skipped'):
      return  # The stage found its own output: keep the time it took when it ran.
    timings[name] = time.perf_counter() - t0
    _write_json(os.path.join(taskdir, 'stage_seconds.json'), timings)

  stage('data', None,
        lambda: generate_data.generate(c, taskdir, progress=False, preview=True))
  stage('train base model', os.path.join(taskdir, train_lib.OUT_DIR),
        lambda: train_lib.train_and_evaluate(c, taskdir))
  for method in [m for m in rc.models if m != 'base']:
    fc = copy.deepcopy(c)
    fc.finetune.method = method
    stage(f'finetune {method}', os.path.join(taskdir, finetune_lib.OUT_PREFIX + method),
          lambda fc=fc: finetune_lib.finetune(fc, taskdir))
  stage('diagnose the gap', os.path.join(taskdir, diagnose_gap.OUT_DIR),
        lambda: diagnose_gap.diagnose(copy.deepcopy(c), taskdir))
  for row in rows(rc, task):
    out = os.path.join(taskdir, plan_lib.OUT_DIR, row['name'])
    stage(f'plan {row["name"]}', out,
          lambda row=row: plan_lib.evaluate(row_config(c, row), taskdir,
                                            checkpoint_dir(taskdir, row['model'])))
  return collect_task(rc, task, taskdir, c, timings)


def _load_json(path):
  """The parsed file, None if absent; io.CorruptFileError (naming it) if damaged."""
  if not os.path.exists(path):
    return None
  return io.read_json(path)


def _write_json(path, obj):
  io.write_json(path, obj)


# ------------------------------------------------------------------------------------ results
def collect_task(rc, task: str, taskdir: str, c, timings) -> dict[str, Any]:
  """Gathers a task's outputs into one dict (and draws its success-vs-time plot)."""
  env = envs.load(task)
  ds = data_lib.load_dataset(os.path.join(taskdir, generate_data.DATASET_DIR), task=task)
  coverage = generate_data.task_summary(env, np.asarray(ds.states))
  models = {}
  for model in rc.models:
    ev = _load_json(os.path.join(checkpoint_dir(taskdir, model), train_lib.EVAL_FILE))
    e = ev['errors']['markov']
    h = ev['horizon']
    models[model] = {k: e['model']['loss'][k - 1] / max(e['no_change']['loss'][k - 1], 1e-30)
                     for k in sorted({1, h})}
  evaluations = []
  for row in rows(rc, task):
    r = _load_json(os.path.join(taskdir, plan_lib.OUT_DIR, row['name'], 'results.json'))
    evaluations.append(dict(row, success_rate=r['success_rate'],
                            ci95=r['success_rate_ci95'], num_instances=r['num_instances'],
                            budget=r['budget'], settings=r['protocol']['settings'],
                            seconds_per_episode=r['timing']['seconds_per_episode'],
                            seconds_per_instance=r['timing']['seconds_per_instance_amortised'],
                            compile_seconds=r['timing']['compile_seconds'],
                            instance_success=[i['success'] for i in r['instances']],
                            mean_final_distance=r['mean_final_distance']))
  result = {'task': task, 'variant': c.variant, 'coverage': coverage,
            'model_error_ratio_vs_no_change': models,
            'gap': _load_json(os.path.join(taskdir, diagnose_gap.OUT_DIR, 'gap.json')),
            'evaluations': evaluations, 'stage_seconds': timings,
            'seeds': {'plan.seed': int(rc.seed), 'data.seed': int(c.data.seed),
                      'seed': int(c.seed)}}
  with io.atomic_path(os.path.join(taskdir, 'success_vs_time.png')) as tmp:
    plot_success_vs_time(result, tmp)
  return result


def plot_success_vs_time(result: dict[str, Any], path: str) -> None:
  """Success rate against planning time per episode and problem (rows with fewer problems
  batch fewer, so the batched time is divided by the problem count), one line per model x
  planner."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  lines = {}
  for e in result['evaluations']:
    if e['mode'] != 'mpc' or e['bounded'] or e['simulator'] or e['kind'] == 'baseline':
      continue
    lines.setdefault((e['model'], e['planner']), []).append(e)
  fig, ax = plt.subplots(figsize=(6, 4))
  for (model, planner), pts in sorted(lines.items()):
    pts = sorted(pts, key=lambda e: e['seconds_per_instance'])
    ax.plot([e['seconds_per_instance'] for e in pts], [100 * e['success_rate'] for e in pts],
            marker='o', linestyle='-' if model == 'base' else '--',
            label=f'{planner} ({MODEL_LABELS[model]})')
  for e in result['evaluations']:
    if e['kind'] == 'baseline' and e['model'] == 'base':
      ax.scatter([e['seconds_per_instance']], [100 * e['success_rate']], marker='x',
                 label=f'{e["planner"]} (base)')
  ax.set_xscale('log')
  ax.set_xlabel('seconds per MPC episode and problem (batched run time / problems)')
  ax.set_ylabel('success %')
  ax.set_title(f'{result["task"]}: success vs planning time, equal executed steps')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _cell(e: dict[str, Any] | None, n: int | None = None) -> str:
  """Success % [95% CI], with the number of problems where it is not `n`."""
  if e is None:
    return '-'
  lo, hi = e['ci95']
  more = f' (n={e["num_instances"]})' if n is not None and e['num_instances'] != n else ''
  return f'{100 * e["success_rate"]:.0f} [{100 * lo:.0f}-{100 * hi:.0f}]{more}'


def _on_same_problems(e: dict[str, Any], ev: list[dict[str, Any]]) -> str:
  """Adam's and CEM's MPC success (same model; the base model's for the ceiling) on the first
  n problems, for a row evaluated on only those."""
  model = 'base' if e['simulator'] else e['model']
  out = []
  for planner in ('adam', 'cem'):
    ref = next((r for r in ev if r['kind'] == 'grid' and r['model'] == model
                and r['planner'] == planner and r['mode'] == 'mpc'), None)
    if ref is not None and ref is not e and ref['num_instances'] >= e['num_instances']:
      ok = ref['instance_success'][:e['num_instances']]
      out.append(f'{planner} {100 * sum(ok) / len(ok):.0f}')
  return ', '.join(out) or '-'


def _how_to_read(variant: str, scale: str, has_ceiling: bool) -> list[str]:
  """What the success table's columns mean and which of its numbers compare."""
  sizes = f'`{variant}`-sized' + (', trained for fewer steps (quick scale)' if scale == 'quick'
                                   else '')
  out = ['Columns: *model* is what the planner plans through (base: trained by teacher forcing; '
         'AWM / OWM: the base model finetuned adversarially / online; simulator: the true '
         'dynamics); *mode* is open loop (one plan, executed blind) or MPC (replanning after '
         'executed actions); one column per planner; *paper GD / Adam / CEM* is the success '
         'the paper reports for the same model and mode (arXiv 2512.09929, Table 1).', '',
         'What compares: rows and planners of this table with each other (same problems, seeds '
         'and executed-action budget). The paper column does not compare number to number: the '
         'paper plans through DINO-WM at its sizes (a frozen DINOv2 encoder, a 6-layer '
         f'predictor) on its own datasets, 50 problems per cell; these world models are {sizes}, '
         'trained on data of our own simulators, with planner budgets scaled down '
         '(`plan.*` of the task config). Read the paper column for the direction of its effects '
         '(AWM and OWM help Adam, CEM is strong), not for levels.']
  if has_ceiling:
    out += ['', 'The simulator row is not an upper bound: it removes model error only. Its '
            'planner minimises the same latent cost (the base model\'s encoder on rendered '
            'frames) with the same budget, through contacts and a renderer whose gradients can '
            'be flat or non-finite, so a learned model, smoother, can score above it; where one '
            'does, the cost and the planner, not the model, limit success.']
  return out


def markdown(results: dict[str, Any]) -> str:
  """The reproduction's tables: model quality, the gap, success per cell, timing."""
  out = [f'# Reproduction ({results["scale"]} scale)', '',
         f'Run time {results["seconds"] / 60:.1f} min on {results["machine"].get("cpu", "?")}; '
         f'jax {results["machine"].get("jax", "?")}.', '']
  for t in results['tasks']:
    ev = t['evaluations']
    find = lambda **kw: next((e for e in ev if all(e[k] == v for k, v in kw.items())), None)
    out += [f'## {t["task"]} ({t["variant"]})', '',
            'Data coverage: ' + ', '.join(f'{k} {v:.3g}' for k, v in t['coverage'].items()),
            '', 'Held-out latent error / "no change" (markov rollout): ' + '; '.join(
                f'{MODEL_LABELS[m]} ' + ', '.join(f'k={k}: {v:.3f}' for k, v in r.items())
                for m, r in t['model_error_ratio_vs_no_change'].items()), '']
    if t.get('gap'):
      out += [diagnose_gap.markdown(t['gap']).split('\n', 2)[2], '']
    grid = [e for e in ev if e['kind'] in ('grid', 'baseline', 'bounded', 'ceiling')]
    planners = list(dict.fromkeys(e['planner'] for e in grid))
    n = max(e['num_instances'] for e in ev)
    out += ['Success % [95% CI] on ' + f'{n} problems (plan.seed {t["seeds"]["plan.seed"]}) '
            'unless (n=...) says fewer: the first n of the same problems. Every planner executes '
            'the same number of model actions per MPC episode.', '',
            '| model | mode | ' + ' | '.join(planners) + ' | paper GD / Adam / CEM |',
            '|---|---|' + '---|' * (len(planners) + 1)]
    keys = list(dict.fromkeys((e['model'], e['mode'], e['bounded']) for e in grid))
    for model, mode, bounded in keys:
      cells = [_cell(find(model=model, mode=mode, planner=p, bounded=bounded, factor=1.0), n)
               for p in planners]
      pub = PUBLISHED.get(t['task'], {}).get((model, mode)) if not bounded else None
      label = 'simulator (ceiling)' if model == 'simulator' else MODEL_LABELS[model]
      out.append(f'| {label}{" bounded" if bounded else ""} | {mode} | ' + ' | '.join(cells)
                 + f' | {" / ".join(map(str, pub)) if pub else "-"} |')
    out += ['', *_how_to_read(t['variant'], results['scale'], any(e['simulator'] for e in ev))]
    fewer = any(e['num_instances'] < n for e in ev)
    columns = ['row', 'settings', 'budget (replans x executed = model actions)', 'problems',
               's per batched episode', 's per problem', 'compile s', 'success %']
    if fewer:
      columns.append('Adam / CEM MPC on the same problems')
    out += ['', 'Every evaluation: the planner\'s settings, its budget, the problems it ran on, '
            'seconds per MPC episode with all its problems batched in one call and that time '
            'divided by the problems (the column to compare speed by), compile seconds (not part '
            'of the run times), success %' + (
                '; for rows run on fewer problems, Adam\'s and CEM\'s MPC success (same model) '
                'on exactly those problems, the numbers such a row compares with.' if fewer
                else '.'), '',
            '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for e in ev:
      b = e['budget']
      cells = [e['name'], e['settings'],
               f'{b["num_replans"]} x {b["execute"]} = {b["model_actions"]}',
               str(e['num_instances']), f'{e["seconds_per_episode"]:.3g}',
               f'{e["seconds_per_instance"]:.3g}', f'{e["compile_seconds"]:.3g}', _cell(e)]
      if fewer:
        cells.append(_on_same_problems(e, ev) if e['num_instances'] < n else '')
      out.append('| ' + ' | '.join(cells) + ' |')
    out += ['', f'Stage times (s): ' + ', '.join(f'{k} {v:.0f}'
                                                 for k, v in t['stage_seconds'].items()),
            '', f'![success vs time]({t["task"]}/success_vs_time.png)', '']
  return '\n'.join(out)


def reproduce(rc: ml_collections.ConfigDict, workdir: str, say=print) -> dict[str, Any]:
  """Runs (or continues) every task; writes and returns the combined results.

  Holds the lock of `workdir` (and each stage that of its task directory); writes every file
  atomically and `done.json` last.
  """
  check_config(rc)
  with io.workdir_lock(workdir, 'reproduce'):
    return _reproduce(rc, workdir, say)


def _reproduce(rc, workdir, say):
  io.clear_done(workdir)
  tasks = [run_task(rc, task, workdir, say) for task in rc.tasks]
  results = {'scale': rc.scale, 'tasks': tasks, 'config': rc.to_dict(),
             # Total work, including stages run by earlier (interrupted) invocations.
             'seconds': sum(sum(t['stage_seconds'].values()) for t in tasks),
             'machine': machine_lib.machine_info()}
  _write_json(os.path.join(workdir, 'results.json'), results)
  io.write_text(os.path.join(workdir, 'results.md'), markdown(results))
  io.mark_done(workdir, ['results.json', 'results.md'])
  return results


def main(argv, config_flag, workdir_flag):
  runtime.start(argv)
  results = reproduce(config_flag.value, workdir_flag.value)
  print(markdown(results))
  print(f'Results in {os.path.join(workdir_flag.value, "results.md")}')


def run():
  """Entry point of `wmjax-reproduce` and of `python experiments/reproduce.py`."""
  cli.run(main, define_flags)


if __name__ == '__main__':
  run()
