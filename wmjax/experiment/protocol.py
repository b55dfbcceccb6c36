"""What a planning run is, derived from its config: checks, budget, objective (PAPER.md section 3).

`protocol(config)` checks the `plan` section and returns the run's `PlanProtocol`: the planner and
model, open loop or MPC, the objective and rollout the planner minimises, and the budget every
planner gets alike (replans x executed model actions); `run_name` names its output folder. The
planning stage (`plan`), the gap diagnostic and the reproduction grid read the same protocol.
"""

import dataclasses
from typing import Optional

import ml_collections

from wmjax import checks
from wmjax.experiment import planners as planners_lib
from wmjax.planning import objectives

MODELS = ('world_model', 'simulator')
MODES = ('mpc', 'open_loop')
SIMULATOR_COSTS = ('latent', 'state', 'distance')
CHECKPOINTS = ('best', 'latest')
# Numeric plan settings and their valid ranges (checks.range_problem); every other number of the
# config must be finite.
PLAN_RANGES = {
    'plan.alpha': {'low': 0},
    'plan.objective_base': {'low': 0, 'low_open': True},
    **{f'plan.{name}.{field}': {'low': 0, 'low_open': True}
       for name, fields in (('gd', ('lr', 'init_std')),
                            ('adam', ('lr', 'open_loop_lr', 'init_std')),
                            ('cem', ('init_std',)),
                            ('mppi', ('init_std', 'temperature', 'min_std', 'max_std')),
                            ('gradcem', ('lr', 'init_std')))
       for field in fields},
    **{f'plan.{name}.noise_std': {'low': 0} for name in ('gd', 'adam', 'gradcem')},
}


@dataclasses.dataclass(frozen=True)
class PlanProtocol:
  """How an evaluation runs, derived from the config (PAPER.md section 3).

  Attributes:
    planner: the planner's name (`planners.PLANNERS`).
    model: 'world_model' | 'simulator'.
    mode: 'mpc' | 'open_loop'.
    open_loop: mode == 'open_loop'.
    simulator_cost: with model 'simulator': 'latent' | 'state' | 'distance' (else None).
    objective: 'last' | 'all'.
    rollout: 'markov' | 'history'.
    alpha: proprio weight of the cost.
    objective_base: decay of the 'all' weights.
    bounded: plans are kept inside the action bounds.
    horizon: model actions per plan.
    execute: model actions executed per replan.
    num_replans: the budget of replans.
    model_actions: executed model actions per episode (num_replans * execute).
    env_steps: executed env steps per episode.
    settings: a one-line description of the planner's budget.
  """

  planner: str
  model: str
  mode: str
  open_loop: bool
  simulator_cost: Optional[str]
  objective: str
  rollout: str
  alpha: float
  objective_base: float
  bounded: bool
  horizon: int
  execute: int
  num_replans: int
  model_actions: int
  env_steps: int
  settings: str

  def budget_text(self) -> str:
    return (f'{self.num_replans} replans x {self.execute} executed = {self.model_actions} model '
            f'actions ({self.env_steps} env steps)')


def protocol(config: ml_collections.ConfigDict) -> PlanProtocol:
  """The run's derived protocol: objective, rollout, execute, replans, budget (checked)."""
  check_config(config)
  p = config.plan
  name = p.planner
  proto = planners_lib.protocol(name, p[name], objective=p.objective, rollout=p.rollout)
  open_loop = p.mode == 'open_loop'
  horizon = int(p.horizon)
  execute = horizon if open_loop else proto.execute
  num_replans = 1 if open_loop else int(p.budget) // execute
  return PlanProtocol(
      planner=name, model=p.model, mode=p.mode, open_loop=open_loop,
      simulator_cost=p.simulator_cost if p.model == 'simulator' else None,
      objective=proto.objective, rollout=proto.rollout, alpha=float(p.alpha),
      objective_base=float(p.objective_base), bounded=bool(p.bounded),
      horizon=horizon, execute=execute, num_replans=num_replans,
      model_actions=num_replans * execute,
      env_steps=num_replans * execute * int(config.frameskip),
      settings=planners_lib.settings_summary(name, p[name], open_loop))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every invalid or contradictory `plan` setting."""
  p = config.plan
  errors = []
  if p.planner not in planners_lib.PLANNERS:
    raise ValueError(f'Unknown planner plan.planner={p.planner!r}; choose one of '
                     f'{planners_lib.PLANNERS}.')
  if p.model not in MODELS:
    errors.append(f'plan.model={p.model!r}; choose one of {MODELS}')
  if p.mode not in MODES:
    errors.append(f'plan.mode={p.mode!r}; choose one of {MODES}')
  if p.simulator_cost not in SIMULATOR_COSTS:
    errors.append(f'plan.simulator_cost={p.simulator_cost!r}; choose one of {SIMULATOR_COSTS}')
  if p.checkpoint not in CHECKPOINTS:
    errors.append(f'plan.checkpoint={p.checkpoint!r}; choose one of {CHECKPOINTS}')
  section = p[p.planner]
  objective = p.objective or section.get('objective')
  rollout = p.rollout or section.get('rollout')
  if objective not in objectives.MODES:
    errors.append(f'objective {objective!r} (plan.objective or plan.{p.planner}.objective); '
                  f'choose one of {objectives.MODES}')
  if rollout not in objectives.ROLLOUTS:
    errors.append(f'rollout {rollout!r} (plan.rollout or plan.{p.planner}.rollout); choose one '
                  f'of {objectives.ROLLOUTS}')
  horizon, execute = int(p.horizon), int(section.get('execute', 0))
  if horizon < 1:
    errors.append(f'plan.horizon must be >= 1; got {horizon}')
  elif p.mode == 'mpc':
    if not 1 <= execute <= horizon:
      errors.append(f'plan.{p.planner}.execute={execute} must be in [1, plan.horizon={horizon}] '
                    '(model actions executed per replan)')
    elif int(p.budget) < execute or int(p.budget) % execute:
      errors.append(f'plan.budget={p.budget} executed model actions must be a positive multiple '
                    f'of plan.{p.planner}.execute={execute} (replans = budget / execute)')
  if int(p.num_instances) < 1:
    errors.append(f'plan.num_instances must be >= 1; got {p.num_instances}')
  try:
    indices = problem_indices(p)
  except ValueError as e:
    errors.append(str(e))
  else:
    if len(indices) != int(p.num_instances):
      errors.append(f'plan.problem_indices={p.problem_indices!r} names {len(indices)} problems '
                    f'but plan.num_instances={p.num_instances}: set num_instances to '
                    f'{len(indices)} or leave problem_indices empty (problems 0 .. '
                    'num_instances-1)')
  if not 0 <= int(p.num_videos) <= int(p.num_instances):
    errors.append(f'plan.num_videos must be in [0, plan.num_instances={p.num_instances}]; got '
                  f'{p.num_videos}')
  errors += checks.config_problems(config, PLAN_RANGES)
  if p.mppi.min_std > p.mppi.max_std:
    errors.append(f'plan.mppi.min_std={p.mppi.min_std} must be <= plan.mppi.max_std='
                  f'{p.mppi.max_std}')
  checks.raise_config_errors(errors, 'plan config')


def problem_indices(p: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The indices of the problems a run evaluates: `plan.problem_indices` ('2,17-19,40';
  ranges inclusive) or, when empty, 0 .. num_instances-1. Raises ValueError on a malformed,
  negative, descending or repeated index."""
  text = str(p.get('problem_indices', '') or '').strip()
  if not text:
    return tuple(range(max(int(p.num_instances), 0)))
  bad = (f"plan.problem_indices={text!r}: give comma-separated problem indices >= 0 or "
         "inclusive ranges, e.g. '2,17-19,40'")
  out = []
  for part in text.split(','):
    lo, sep, hi = part.strip().partition('-')
    if not lo.strip().isdigit() or (sep and not hi.strip().isdigit()):
      raise ValueError(bad)
    lo, hi = int(lo), int(hi) if sep else int(lo)
    if hi < lo:
      raise ValueError(f'{bad}; the range {part.strip()!r} runs backwards')
    out.extend(range(lo, hi + 1))
  if len(set(out)) != len(out):
    raise ValueError(f'{bad}; an index repeats')
  return tuple(out)


def run_name(config: ml_collections.ConfigDict) -> str:
  p = config.plan
  if p.run_name:
    return p.run_name
  parts = [p.planner, p.mode]
  if p.bounded:
    parts.append('bounded')
  if p.model == 'simulator':
    parts.append('simulator' if p.simulator_cost == 'latent' else f'simulator_{p.simulator_cost}')
  return '_'.join(parts)
