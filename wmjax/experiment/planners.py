"""Planner names used by configs and binaries -> `wmjax.planning` planners.

The only place where a string names a planner. Every factory reads its settings from the config's
per-planner section (`config.plan.<name>`, see experiments/configs/common.py) and returns a
`wmjax.planning.Planner` over normalised model actions (horizon, action_size):

  planner = planners.make_planner('adam', config.plan.adam, horizon=5, action_size=10)

Besides the optimiser settings, each section names the objective ('last' | 'all') and rollout
('markov' | 'history') the planner uses by default and how many model actions it executes per
replan (`execute`); `protocol` reads them.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

import optax

from wmjax import planning

GRADIENT = ('gd', 'adam')
SAMPLING = ('cem', 'mppi', 'gradcem')
PLANNERS = GRADIENT + SAMPLING


@dataclasses.dataclass(frozen=True)
class PlannerProtocol:
  """How a planner is used in an evaluation (PAPER.md section 3).

  Attributes:
    objective: 'last' | 'all'.
    rollout: 'markov' | 'history'.
    execute: model actions executed per replan (MPC).
  """

  objective: str
  rollout: str
  execute: int


def check_name(name: str) -> str:
  if name not in PLANNERS:
    raise ValueError(f'Unknown planner {name!r}; choose one of {PLANNERS}.')
  return name


def _get(settings: Mapping[str, Any], key: str, name: str) -> Any:
  if key not in settings:
    raise ValueError(f'plan.{name} lacks the setting {key!r} (has {sorted(settings)}).')
  return settings[key]


def _gradient(optimizer: Callable[[float], optax.GradientTransformation]):
  def make(s, horizon, action_size, low, high, open_loop):
    lr, steps = s['lr'], s['num_steps']
    if open_loop and 'open_loop_lr' in s:  # Section 3: open-loop GBP uses Adam lr 0.3 x 300.
      lr, steps = s['open_loop_lr'], s['open_loop_num_steps']
    return planning.gradient_planner(
        horizon, action_size, optimizer(float(lr)), int(steps),
        noise_std=float(s['noise_std']), init_std=float(s['init_std']),
        action_low=low, action_high=high)
  return make


def _cem(s, horizon, action_size, low, high, open_loop):
  del open_loop  # Unused.
  return planning.cem(horizon, action_size, int(s['num_samples']), int(s['num_elites']),
                      int(s['num_iterations']), init_std=float(s['init_std']),
                      action_low=low, action_high=high)


def _mppi(s, horizon, action_size, low, high, open_loop):
  del open_loop  # Unused.
  return planning.mppi(horizon, action_size, int(s['num_samples']), int(s['num_elites']),
                       int(s['num_iterations']), temperature=float(s['temperature']),
                       init_std=float(s['init_std']), min_std=float(s['min_std']),
                       max_std=float(s['max_std']), action_low=low, action_high=high)


def _gradcem(s, horizon, action_size, low, high, open_loop):
  del open_loop  # Unused.
  return planning.gradcem(horizon, action_size, optax.adam(float(s['lr'])),
                          int(s['num_samples']), int(s['num_elites']), int(s['num_iterations']),
                          num_grad_steps=int(s['num_grad_steps']), init_std=float(s['init_std']),
                          noise_std=float(s['noise_std']), action_low=low, action_high=high)


# Name -> factory(settings, horizon, action_size, low, high, open_loop) -> Planner.
_FACTORIES = {
    'gd': _gradient(optax.sgd),     # Section 3: plain gradient descent (DINO-WM GD).
    'adam': _gradient(optax.adam),  # Section 3: the paper's GBP.
    'cem': _cem,
    'mppi': _mppi,
    'gradcem': _gradcem,
}


def _as_dict(settings: Any) -> dict[str, Any]:
  return settings.to_dict() if hasattr(settings, 'to_dict') else dict(settings)


def make_planner(name: str, settings: Any, *, horizon: int, action_size: int,
                 action_low=None, action_high=None, open_loop: bool = False
                 ) -> planning.Planner:
  """Builds the planner `name` from its config section.

  Args:
    name: one of `PLANNERS`.
    settings: the planner's section (`config.plan.<name>`), a ConfigDict or mapping.
    horizon: H, model actions per plan.
    action_size: A, model action size (frameskip * raw action size).
    action_low, action_high: optional bounds ((A,) or scalars, normalised units) the planner
      projects its plans onto; None for the paper's unbounded planners.
    open_loop: use the open-loop settings where a planner has them (Adam: lr 0.3 x 300).

  Returns:
    A `wmjax.planning.Planner`.

  Raises:
    ValueError: unknown name, missing settings or invalid sizes.
  """
  s = _as_dict(settings)
  try:
    return _FACTORIES[check_name(name)](s, horizon, action_size, action_low, action_high,
                                        open_loop)
  except KeyError as e:
    raise ValueError(f'plan.{name} lacks the setting {e} (has {sorted(s)}).') from None


def protocol(name: str, settings: Any, *, objective: Optional[str] = None,
             rollout: Optional[str] = None) -> PlannerProtocol:
  """The planner's objective, rollout and executed actions per replan, with optional overrides."""
  s = _as_dict(settings)
  check_name(name)
  return PlannerProtocol(objective=objective or _get(s, 'objective', name),
                  rollout=rollout or _get(s, 'rollout', name),
                  execute=int(_get(s, 'execute', name)))


def settings_summary(name: str, settings: Any, open_loop: bool = False) -> str:
  """A one-line description of the budget, e.g. 'adam lr 0.2 x 100' or 'cem 300 x 30 (top 30)'."""
  s = _as_dict(settings)
  check_name(name)
  if name in GRADIENT:
    lr, steps = s['lr'], s['num_steps']
    if open_loop and 'open_loop_lr' in s:
      lr, steps = s['open_loop_lr'], s['open_loop_num_steps']
    return f'{name} lr {lr:g} x {steps}'
  text = f'{name} {s["num_samples"]} x {s["num_iterations"]} (top {s["num_elites"]})'
  if name == 'gradcem':
    text += f', adam lr {s["lr"]:g} x {s["num_grad_steps"]}'
  return text
