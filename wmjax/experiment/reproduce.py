"""The reproduction stage: the paper's comparison end to end (PAPER.md section 6) on our tasks.

Binary: `experiments/reproduce.py` (`wmjax-reproduce`), with
`--config experiments/configs/reproduce.py:<scale>`.

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
numbers, `reproduce_report`) and `<workdir>/<task>/success_vs_time.png`.
"""

import copy
import fnmatch
import os
import time
from typing import Any

import ml_collections
import numpy as np

from wmjax import checks
from wmjax import data as data_lib
from wmjax import envs
from wmjax import io
from wmjax import machine as machine_lib
from wmjax.experiment import cli
from wmjax.experiment import finetune as finetune_lib
from wmjax.experiment import gap
from wmjax.experiment import generate
from wmjax.experiment import layout
from wmjax.experiment import plan as plan_lib
from wmjax.experiment import planners as planners_lib
from wmjax.experiment import protocol as protocol_lib
from wmjax.experiment import reproduce_report
from wmjax.experiment import train as train_lib


def task_config(rc: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
  """The task's config at the reproduction's variant, with the scale's overrides applied."""
  if task not in envs.ALL_ENVS:
    raise ValueError(f'Unknown task {task!r}; choose from {envs.ALL_ENVS}.')
  c = cli.shipped_config(task, rc.task_variant)
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
    if model not in reproduce_report.MODEL_LABELS:
      errors.append(f'unknown model {model!r}; choose from '
                    f'{tuple(reproduce_report.MODEL_LABELS)}')
  for field in ('sweep_models', 'baseline_models', 'bounded_models'):
    for model in rc[field]:
      if model not in rc.models:
        errors.append(f'{field} has {model!r}, which is not in models {tuple(rc.models)}')
  for entry in rc.instances:
    if len(entry) != 2 or not isinstance(entry[0], str) or int(entry[1]) < 1:
      errors.append(f'instances: each entry must be (pattern, n >= 1); got {entry!r}')
  for mode in rc.modes:
    if mode not in protocol_lib.MODES:
      errors.append(f'unknown mode {mode!r}; choose from {protocol_lib.MODES}')
  for field in ('planners', 'baselines', 'ceiling', 'bounded', 'sweep'):
    for name in rc[field]:
      if name not in planners_lib.PLANNERS:
        errors.append(f'{field}: unknown planner {name!r}; choose from {planners_lib.PLANNERS}')
  for name, factors in rc.sweep.items():
    if any(not float(f) > 0 for f in factors):
      errors.append(f'sweep[{name!r}] factors must be > 0; got {tuple(factors)}')
  checks.raise_config_errors(errors, 'reproduce config')
  # Patterns may name any task (a run restricted to some tasks keeps the others' patterns).
  every = [f'{task}/{r["name"]}' for task in envs.ALL_ENVS
           for r in rows(rc, task, skip=False)]
  for field, patterns in (('skip', rc.skip), ('instances', [p for p, _ in rc.instances])):
    for pattern in patterns:
      if not fnmatch.filter(every, pattern):
        errors.append(f'{field}: pattern {pattern!r} matches no row (rows are '
                      f'<task>/<model>/<planner>_<mode>[_x<factor>][_bounded], e.g. {every[0]})')
  checks.raise_config_errors(errors, 'reproduce config')


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
    return os.path.join(taskdir, layout.WORLD_MODEL_DIR)
  return layout.finetune_dir(taskdir, model)


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
        lambda: generate.generate(c, taskdir, progress=False, preview=True))
  stage('train base model', os.path.join(taskdir, layout.WORLD_MODEL_DIR),
        lambda: train_lib.train_and_evaluate(c, taskdir))
  for method in [m for m in rc.models if m != 'base']:
    fc = copy.deepcopy(c)
    fc.finetune.method = method
    stage(f'finetune {method}', layout.finetune_dir(taskdir, method),
          lambda fc=fc: finetune_lib.finetune(fc, taskdir))
  stage('diagnose the gap', os.path.join(taskdir, layout.DIAGNOSE_DIR),
        lambda: gap.diagnose(copy.deepcopy(c), taskdir))
  for row in rows(rc, task):
    out = os.path.join(taskdir, layout.PLAN_DIR, row['name'])
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
def _host_seconds(timing: dict[str, Any]) -> float | None:
  """A plan row's host work around its compiled call (None for results written before it was
  timed)."""
  parts = [timing.get(k) for k in ('load_seconds', 'problems_seconds', 'outputs_seconds')]
  return None if None in parts else sum(parts)


def collect_task(rc, task: str, taskdir: str, c, timings) -> dict[str, Any]:
  """Gathers a task's outputs into one dict (and draws its success-vs-time plot)."""
  env = envs.load(task)
  ds = data_lib.load_dataset(os.path.join(taskdir, layout.DATASET_DIR), task=task)
  coverage = generate.task_summary(env, np.asarray(ds.states))
  models = {}
  for model in rc.models:
    ev = _load_json(os.path.join(checkpoint_dir(taskdir, model), layout.EVAL_FILE))
    e = ev['errors']['markov']
    h = ev['horizon']
    models[model] = {k: e['model']['loss'][k - 1] / max(e['no_change']['loss'][k - 1], 1e-30)
                     for k in sorted({1, h})}
  evaluations = []
  for row in rows(rc, task):
    r = _load_json(os.path.join(taskdir, layout.PLAN_DIR, row['name'], layout.RESULTS_FILE))
    evaluations.append(dict(row, success_rate=r['success_rate'],
                            ci95=r['success_rate_ci95'], num_instances=r['num_instances'],
                            budget=r['budget'], settings=r['protocol']['settings'],
                            seconds_per_episode=r['timing']['seconds_per_episode'],
                            seconds_per_instance=r['timing']['seconds_per_instance_amortised'],
                            compile_seconds=r['timing']['compile_seconds'],
                            host_seconds=_host_seconds(r['timing']),
                            instance_success=[i['success'] for i in r['instances']],
                            mean_final_distance=r['mean_final_distance']))
  result = {'task': task, 'variant': c.variant, 'coverage': coverage,
            'model_error_ratio_vs_no_change': models,
            'gap': _load_json(os.path.join(taskdir, layout.DIAGNOSE_DIR, layout.GAP_FILE)),
            'evaluations': evaluations, 'stage_seconds': timings,
            'seeds': {'plan.seed': int(rc.seed), 'data.seed': int(c.data.seed),
                      'seed': int(c.seed)}}
  with io.atomic_path(os.path.join(taskdir, 'success_vs_time.png')) as tmp:
    reproduce_report.plot_success_vs_time(result, tmp)
  return result


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
  _write_json(os.path.join(workdir, layout.RESULTS_FILE), results)
  io.write_text(os.path.join(workdir, 'results.md'), reproduce_report.markdown(results))
  io.mark_done(workdir, [layout.RESULTS_FILE, 'results.md'])
  return results

