"""What experiments/reproduce.py runs: `--config experiments/configs/reproduce.py:<scale>`.

Scales:
  test   seconds; the CI smoke run (task `test` configs, tiny grid).
  quick  one task (wall) at reduced `cpu` sizes, about 21 minutes on 2 idle CPU cores: the README's
         main command (base, AWM and OWM models; Adam and CEM under MPC, the CEM simulator
         ceiling and a half-budget sweep point; 20 problems).
  cpu    the three tasks at their `cpu` configs: the grid of PAPER.md section 6 plus MPPI,
         GradCEM, the true-dynamics ceiling, bounded Adam and a budget sweep, with the costliest
         rows on fewer problems or left out (see below) to fit 2 CPU cores in a few hours
         (measured on an idle 2-core machine: Wall 61 minutes, PointMaze 43; RESULTS.md).
  gpu    the three tasks at their `gpu` configs on one H200: data, a conv world model trained
         on the GPU, AWM and OWM, the gap diagnostic, then Adam, CEM and GD at the paper's
         planner budgets (Adam 100 steps, 300 open loop; CEM 300 samples, top 30, 30 iterations
         on PushT and 10 on PointMaze and Wall; GD 1000 steps) on 50 problems. Measured: PushT's
         first nine of ten rows took 10.3 minutes from an empty compilation cache, so run one
         task at a time (`--config.tasks="('pusht',)"`, then pointmaze, then wall; PushT about
         11 minutes). Time table below.
  paper  the three tasks at their `paper` configs, every row on 50 problems (a GPU; DINOv2
         weights from a local file).

The `gpu` scale. Every row batches its 50 problems in one jitted call; the rows of the base, AWM
and OWM models share a program (the parameters are arguments): the first row of a program
compiles it (or loads it from the persistent compilation cache, on in every binary) and later
rows of the same process reuse it as it is (`wmjax.experiment.plan`: no trace, no load).
Planning at the paper's budgets on a small model is bound by two things: the latency of
sequential gradient steps (Adam: 3.7 ms per step for 50 problems, measured; GD under MPC is
30 x 1000 steps) and the FLOPs of CEM's 15,000-window populations (PushT: 30 iterations through
3-frame windows). The predictor is therefore the `cpu` one (4 layers, width 128, 16 tokens);
the encoder is twice as wide (conv channels 32-64-128-128) and training batches are 4x the cpu's
(128). Rows left out (patterns in `skip`): GD under MPC (latency: measured 95.5 s per 30-action
episode on an H100, nearly a minute and a half per row), open loop on the OWM model (the paper
reports no such cell) and AWM open-loop CEM and GD (the paper's open-loop AWM claim is about
GBP). Left: 10 rows per task, 30 in all. A run that is stopped continues where it stopped when
started again (each stage is skipped once done, and the warm compilation cache skips the
compiles).

Seconds per stage, PushT measured on one H200 (2026-11-30, jax 0.11.2, fresh machine, empty
compilation cache; RESULTS.md "Reproduction at the `gpu` scale"), with the encoder pretrained
1,000 steps (now 3,000: ~30 s more). It was sized from estimates at 557 s for all three tasks;
PushT took 2.4x its estimate, and PointMaze and Wall have not run on a GPU yet.

| stage | size | pusht | of which |
|---|---|---|---|
| data | 4,000 x 100 steps | 23 | |
| base model | encoder 1,000 + world model 3,500 steps x 128 | 121 | steps 14 + 39 |
| AWM | 200 steps x 40 | 35 | first step (compile) 25 |
| OWM | 200 steps x 40, 20 plans (Adam x 100, 8 segments) | 63 | first step 49 |
| gap diagnostic | 3 models x open-loop Adam x 300, 50 problems | 80 | |
| 9 planning rows | Adam and CEM, open loop and MPC | 296 | compiles 148, episodes 79 |
| GD open loop | x 1000 | not run | estimated ~35 |
| total | | 618 + GD | about 11 minutes with the process start |

A planning row's first program compiled in 20-35 s, a repeat (another model, a cache hit) still
took 8-9 s to trace and load (repeats now reuse the process's program: 0 s on the CPU, not yet
measured on a GPU), and each row spends ~8 s loading the model, sampling problems and plotting:
compiles and host work, not episodes, are where a faster `gpu` scale has to start.
"""

import ml_collections

SCALES = ('test', 'quick', 'cpu', 'gpu', 'paper')
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
    'gpu': {},
    'paper': {},
}


def get_config(scale: str = 'cpu') -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f'Unknown reproduce scale {scale!r}; choose one of {SCALES}.')
  c = ml_collections.ConfigDict()
  c.scale = scale
  c.task_variant = {'test': 'test', 'quick': 'cpu', 'cpu': 'cpu', 'gpu': 'gpu',
                    'paper': 'paper'}[scale]
  c.tasks = ('wall',) if scale in ('quick', 'test') else TASKS
  c.overrides = ml_collections.ConfigDict(_OVERRIDES[scale])
  c.seed = 0  # Problems and episode keys of every row (plan.seed).

  # The grid of PAPER.md section 6: every model x planner x mode.
  c.models = ('base', 'adversarial', 'online')   # base | adversarial (AWM) | online (OWM).
  c.planners = ('adam', 'cem', 'gd')  # Rows run in this order (cheapest first).
  c.modes = ('open_loop', 'mpc')
  # Baselines reviewers asked for (section 8), under MPC, on these models.
  c.baselines = ('mppi', 'gradcem')
  c.baseline_models = c.models
  # The true-dynamics ceiling under MPC: the simulator as the model, scored with the base model's
  # own cost (its frozen encoder on the rendered simulated frames).
  c.ceiling = ('adam', 'cem')
  # Adam with plans kept in the valid action range (the paper's GBP is unbounded), under MPC.
  c.bounded = ('adam',)
  c.bounded_models = c.models
  # Success vs time: planners at several budgets (factor 1 is the grid's own row), under MPC.
  # Gradient planners: steps x factor; sampling planners: samples and elites x factor
  # (iterations kept).
  c.sweep = ml_collections.ConfigDict({'adam': (0.25, 0.5, 2.0), 'cem': (0.25, 0.5, 2.0)})
  c.sweep_models = ('base', 'adversarial')
  # Rows are named '<task>/<model>/<planner>_<mode>[_x<factor>][_bounded]' (the ceiling's model
  # is 'simulator'). instances: (pattern, n) pairs, the first matching pattern (fnmatch) gives
  # the row's number of problems, the first n of the same problems (the tables also give Adam's
  # and CEM's success on exactly those); unmatched rows use plan.num_instances. skip: patterns
  # of rows left out.
  c.instances = ()
  c.skip = ()
  if scale == 'test':  # One row of each kind, to keep the CI smoke run short.
    c.models = ('base', 'adversarial')
    c.planners = ('adam',)
    c.baselines = ('cem',)
    c.baseline_models = c.models
    c.bounded_models = ('base',)
    c.ceiling = ('cem',)
    c.sweep = ml_collections.ConfigDict({'adam': (0.5,)})
    c.sweep_models = ('base',)
    c.instances = (('*/*/cem_mpc', 2),)
  if scale == 'quick':
    c.planners = ('adam', 'cem')
    c.modes = ('mpc',)
    c.baselines = ()
    c.ceiling = ('cem',)
    c.bounded = ()
    c.sweep = ml_collections.ConfigDict({'adam': (0.5,), 'cem': (0.5,)})
    c.sweep_models = ('base',)
  if scale == 'cpu':
    # Sized for 2 CPU cores from measured row costs (RESULTS.md). A CEM, MPPI or GradCEM episode
    # through the PointMaze and PushT models (three history frames; PushT's CEM runs 30
    # iterations) costs 4-12x one through Wall's, so there: CEM under MPC on the finetuned models
    # (PushT: every CEM row) runs on the first 10 problems, MPPI and GradCEM and the open-loop OWM
    # rows the paper does not report are left out. GD under MPC (10x Adam's steps) runs on the
    # base model; the baselines, bounded Adam, the ceiling (CEM: Adam through the renderer is
    # the costly one on CPU) and the sweep on the base model.
    c.baseline_models = ('base',)
    c.bounded_models = ('base',)
    c.ceiling = ('cem',)
    c.sweep = ml_collections.ConfigDict({'adam': (0.5, 2.0), 'cem': (0.25,)})
    c.sweep_models = ('base',)
    c.skip = ('*/adversarial/gd_mpc', '*/online/gd_mpc', 'pusht/base/adam_mpc_x2') + tuple(
        f'{t}/{row}' for t in ('pointmaze', 'pusht')
        for row in ('*/mppi_mpc', '*/gradcem_mpc', 'online/gd_open_loop', 'online/cem_open_loop'))
    c.instances = (('*/*/gd_mpc', 10), ('*/*/mppi_mpc', 10), ('*/*/gradcem_mpc', 10),
                   ('wall/simulator/*', 20), ('*/simulator/*', 10),
                   ('pointmaze/adversarial/cem_mpc', 10), ('pointmaze/online/cem_mpc', 10),
                   ('pusht/*/cem_*', 10))
  if scale == 'gpu':
    # One task per run on one H200 (time table in the module docstring): the grid of
    # Adam and CEM open loop and under MPC, GD open loop, every row on 50 problems.
    c.baselines = ()
    c.baseline_models = ()
    c.ceiling = ()
    c.bounded = ()
    c.bounded_models = ()
    c.sweep = ml_collections.ConfigDict()
    c.sweep_models = ()
    c.skip = ('*/*/gd_mpc', '*/online/*_open_loop', '*/adversarial/cem_open_loop',
              '*/adversarial/gd_open_loop')
  return c
