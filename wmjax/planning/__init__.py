"""Planners and planning objectives.

A planner is a `Planner(init, plan, shift)` of pure functions that minimises any
`cost(actions (H, A)) -> ()`; see `wmjax.planning.base` for the contract.
"""

from wmjax.planning.base import Info
from wmjax.planning.base import Planner
from wmjax.planning.base import PlannerState
from wmjax.planning.cem import cem
from wmjax.planning.gradcem import gradcem
from wmjax.planning.gradient import gradient_planner
from wmjax.planning.mppi import mppi
from wmjax.planning.objectives import latent_distance
from wmjax.planning.objectives import trajectory_cost
from wmjax.planning.objectives import trajectory_weights
from wmjax.planning.objectives import world_model_cost

__all__ = [
    'Info',
    'Planner',
    'PlannerState',
    'cem',
    'gradcem',
    'gradient_planner',
    'latent_distance',
    'mppi',
    'trajectory_cost',
    'trajectory_weights',
    'world_model_cost',
]
