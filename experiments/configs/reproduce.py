"""What experiments/reproduce.py runs: `--config experiments/configs/reproduce.py:<scale>`.

Scales:
  test   seconds; the CI smoke run (task `test` configs, tiny grid).
  quick  one task (wall) at reduced `cpu` sizes, about 15 minutes on 2 CPU cores: the README's
         main command (base, AWM and OWM models; Adam and CEM under MPC, the simulator ceiling
         and a half-budget sweep point; 20 problems).
  cpu    the three tasks at their `cpu` configs, the full grid (PAPER.md section 6 plus MPPI,
         GradCEM, the true-dynamics ceiling, bounded Adam and a budget sweep).
  paper  the three tasks at their `paper` configs (a GPU; DINOv2 weights from a local file).
"""

import ml_collections

SCALES = ('test', 'quick', 'cpu', 'paper')
TASKS = ('pusht', 'pointmaze', 'wall')

# Task-config overrides per scale, {section: {field: value}} (applied after
# `get_config(task_variant)`; a field the task config lacks is an error).
_OVERRIDES = {
    'test': {'plan': {'budget': 5}},
    # quick: shorter training and finetuning, 20 problems; budgets keep the cpu ratios.
    'quick': {'train': {'steps': 3000, 'encoder_pretrain_steps': 300,
                        'encoder_pretrain_images': 8000},
              'finetune': {'steps': 300},
              'plan': {'num_instances': 20, 'num_videos': 2}},
    'cpu': {},
    'paper': {},
}


def get_config(scale: str = 'cpu') -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f'Unknown reproduce scale {scale!r}; choose one of {SCALES}.')
  c = ml_collections.ConfigDict()
  c.scale = scale
  c.task_variant = {'test': 'test', 'quick': 'cpu', 'cpu': 'cpu', 'paper': 'paper'}[scale]
  c.tasks = ('wall',) if scale in ('quick', 'test') else TASKS
  c.overrides = ml_collections.ConfigDict(_OVERRIDES[scale])
  c.seed = 0  # Problems and episode keys of every row (plan.seed).

  # The grid of PAPER.md section 6: every model x planner x mode.
  c.models = ('base', 'adversarial', 'online')   # base | adversarial (AWM) | online (OWM).
  c.planners = ('gd', 'adam', 'cem')
  c.modes = ('open_loop', 'mpc')
  # Baselines reviewers asked for (section 8), on every model, under MPC.
  c.baselines = ('mppi', 'gradcem')
  # The true-dynamics ceiling (simulator as the model, same cost), under MPC.
  c.ceiling = ('adam', 'cem')
  # Adam with plans kept in the valid action range (the paper's GBP is unbounded), under MPC.
  c.bounded = ('adam',)
  # Success vs time: each planner at several budgets, base and AWM models, under MPC.
  # adam: gradient steps x factor; cem: samples and elites x factor (iterations kept).
  c.sweep_planners = ('adam', 'cem')
  c.sweep_models = ('base', 'adversarial')
  c.sweep_factors = (0.25, 0.5, 2.0)  # Factor 1 is the grid's own row.
  if scale == 'test':  # One row of each kind, to keep the CI smoke run short.
    c.models = ('base', 'adversarial')
    c.planners = ('adam',)
    c.baselines = ('cem',)
    c.ceiling = ('cem',)
    c.sweep_planners = ('adam',)
    c.sweep_models = ('base',)
    c.sweep_factors = (0.5,)
  if scale == 'quick':
    c.models = ('base', 'adversarial', 'online')
    c.planners = ('adam', 'cem')
    c.modes = ('mpc',)
    c.baselines = ()
    c.ceiling = ('adam', 'cem')
    c.bounded = ()
    c.sweep_models = ('base',)
    c.sweep_factors = (0.5,)
  return c
