"""What the reproduction writes: results.md (success tables beside the published numbers, budgets,
timing) and a success-vs-time plot per task, from the results `reproduce` collected.
"""

from typing import Any

from wmjax.experiment import gap

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
      out += [gap.markdown(t['gap']).split('\n', 2)[2], '']
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
               's per batched episode', 's per problem', 'compile s', 'host s', 'success %']
    if fewer:
      columns.append('Adam / CEM MPC on the same problems')
    out += ['', 'Every evaluation: the planner\'s settings, its budget, the problems it ran on, '
            'seconds per MPC episode with all its problems batched in one call and that time '
            'divided by the problems (the column to compare speed by), compile seconds and host '
            'seconds (loading the model, sampling the problems, writing the outputs; neither part '
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
               f'{e["seconds_per_instance"]:.3g}', f'{e["compile_seconds"]:.3g}',
               '-' if e.get('host_seconds') is None else f'{e["host_seconds"]:.3g}', _cell(e)]
      if fewer:
        cells.append(_on_same_problems(e, ev) if e['num_instances'] < n else '')
      out.append('| ' + ' | '.join(cells) + ' |')
    out += ['', f'Stage times (s): ' + ', '.join(f'{k} {v:.0f}'
                                                 for k, v in t['stage_seconds'].items()),
            '', f'![success vs time]({t["task"]}/success_vs_time.png)', '']
  return '\n'.join(out)
