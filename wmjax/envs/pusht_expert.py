"""The scripted noisy pushing expert of PushT (behaviour data and evaluation problems).

A `wmjax.envs.base.Policy` written for ONE instance; `wmjax.data.policies.load_policy(
'pusht_expert', env)` names it for datasets, and `PushT.sample_problem` follows it to draw
start and goal states. It reads only the task's geometry (`pusht_geometry`): the task imports
its expert, never the reverse.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wmjax.envs import base
from wmjax.envs import pusht_geometry as geometry
from wmjax.envs.base import Policy


# Reachable parts of the T's boundary, local px (origin at the crossbar's top-edge
# midpoint, y down): (start, end, outward normal). The insides of the two concave corners
# under the crossbar, where the pusher disk cannot reach, are left out.
_EDGES = np.array([
    [(-57, 0), (57, 0), (0, -1)],      # Crossbar top.
    [(60, 3), (60, 27), (1, 0)],       # Crossbar right end.
    [(31, 30), (57, 30), (0, 1)],      # Under the crossbar, right.
    [(15, 46), (15, 117), (1, 0)],     # Stem right.
    [(-12, 120), (12, 120), (0, 1)],   # Stem bottom.
    [(-15, 46), (-15, 117), (-1, 0)],  # Stem left.
    [(-31, 30), (-57, 30), (0, 1)],    # Under the crossbar, left.
    [(-60, 3), (-60, 27), (-1, 0)],    # Crossbar left end.
], np.float32)
_EDGE_LOGITS = np.log(np.linalg.norm(_EDGES[:, 1] - _EDGES[:, 0], axis=-1))
_CENTER = geometry.WORKSPACE / 2
_APPROACH_GAIN = 3.0  # Approach action = gain * offset to the next point / 100 px.
_ARRIVED = 12.0  # px from the pre-contact point at which the push starts.
_LOST = 20.0  # px between pusher rim and T past which a push has slid off and ends.
_DETOUR_RADIUS = 115.0  # px: circle around the pivot that the pusher detours along.
_DETOUR_STEP = 0.7  # rad: how far round the circle each detour waypoint lies.


class PushTExpertState(NamedTuple):
  pushing: jax.Array     # () bool: False = approaching the pre-contact point.
  contact: jax.Array     # (2,) chosen contact point, block frame, px.
  normal: jax.Array      # (2,) outward normal there, block frame.
  direction: jax.Array   # (2,) unit push direction, block frame.
  speed: jax.Array       # () push action magnitude.
  steps_left: jax.Array  # () int32 steps left in the current phase.


def _rotate(v: jax.Array, angle: jax.Array) -> jax.Array:
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def pusht_expert(env: base.Env, num_candidates: int = 16, standoff: float = 6.0,
                 max_push_angle: float = 0.6, push_steps: tuple[int, int] = (4, 16),
                 push_speed: tuple[float, float] = (0.1, 0.35), approach_speed: float = 0.35,
                 approach_steps: int = 40,
                 proximity_scale: float = 40.0, centering: float = 2.0,
                 action_noise: float = 0.05, random_prob: float = 0.03) -> Policy:
  """Scripted noisy pushing expert for PushT.

  It cycles through three stages:
    1. Pick a push. `num_candidates` contact points are drawn on the reachable boundary of
       the T (uniform along its length) with a push direction = the inward normal turned
       by a uniform angle in +-`max_push_angle`. One is chosen at random with logits
       -(pusher distance to its pre-contact point) / `proximity_scale` (prefer nearby
       pushes: short approaches, so most steps are in contact) + `centering` x (alignment
       of the push with the direction from the block to the workspace centre, weighted by
       how far off-centre the block is: keeps the block away from the walls).
    2. Approach: drive to the pre-contact point, `standoff` px outside the contact point
       along the outward normal (all points ride with the block, in its frame). If the
       straight path would sweep the pusher through the T, head instead for a waypoint on
       a circle of radius 115 px around the block's pivot, at most 0.7 rad further round
       toward the goal, so the pusher goes around the block. Approach actions are at most
       `approach_speed` long. Gives up and re-picks after `approach_steps` steps.
    3. Push: once within 12 px of the pre-contact point, move at a constant action
       magnitude (uniform in `push_speed`; 1 is ~50 px/step) along the push direction
       (rotating with the block) for a uniform number of steps in `push_steps`, then go
       back to 1. The frictionless pusher may slide along the face, which adds variety;
       once it has slid off (rim > 20 px from the T) the push ends early.
  The defaults are paced like DINO-WM's PushT data (raw relative actions of std ~0.2, i.e.
  ~20 px targets). Measured over 64 episodes x 100 steps: action std 0.24 per axis, the
  pusher touches the T in ~54% of the steps, the T ends ~150 px from where it started and
  turned ~1.2 rad.
  Every action then gets Gaussian noise (std `action_noise`) and, with probability
  `random_prob`, is replaced by a uniform random action; actions are clipped to [-1, 1].

  Args:
    env: the PushT task.
    num_candidates .. random_prob: the knobs described above.

  Returns:
    The Policy.
  """
  if env.name != 'pusht':
    raise ValueError(f'pusht_expert only supports the pusht task, got {env.name!r}.')
  low, high = env.action_low, env.action_high
  radius = geometry.PUSHER_RADIUS
  pivot = jnp.asarray(geometry.PIVOT)

  def pick(key, sv):
    k_edge, k_t, k_angle, k_choice, k_speed = jax.random.split(key, 5)
    edge = jax.random.categorical(k_edge, jnp.asarray(_EDGE_LOGITS), shape=(num_candidates,))
    t = jax.random.uniform(k_t, (num_candidates, 1))
    e = jnp.asarray(_EDGES)[edge]
    contact = e[:, 0] + t * (e[:, 1] - e[:, 0])
    normal = e[:, 2]
    turn = jax.random.uniform(k_angle, (num_candidates,), minval=-max_push_angle,
                              maxval=max_push_angle)
    direction = _rotate(-normal, turn)
    pre = geometry.to_world(sv, contact + (radius + standoff) * normal)
    dist = jnp.linalg.norm(pre - sv[:2], axis=-1)
    block = geometry.to_world(sv, pivot)
    to_center = jnp.full((2,), _CENTER) - block
    off = jnp.linalg.norm(to_center)
    to_center = to_center / jnp.maximum(off, 1e-6)
    align = _rotate(direction, sv[4]) @ to_center
    logits = -dist / proximity_scale + centering * jnp.clip(off / 150.0, 0.0, 1.0) * align
    i = jax.random.categorical(k_choice, logits)
    return PushTExpertState(
        pushing=jnp.asarray(False), contact=contact[i], normal=normal[i],
        direction=direction[i],
        speed=jax.random.uniform(k_speed, (), minval=push_speed[0], maxval=push_speed[1]),
        steps_left=jnp.asarray(approach_steps, jnp.int32))

  def approach_action(pstate, sv):
    agent = sv[:2]
    pre = geometry.to_world(sv, pstate.contact + (radius + standoff) * pstate.normal)
    # Is the straight path clear of the T (pusher disk included)?
    s = jnp.linspace(0.0, 1.0, 9)[:, None]
    path = agent + s * (pre - agent)
    clear = jnp.min(geometry.block_sdf(sv, path)) > radius + 1.0
    center = geometry.to_world(sv, pivot)
    phi_a = jnp.arctan2(agent[1] - center[1], agent[0] - center[0])
    phi_p = jnp.arctan2(pre[1] - center[1], pre[0] - center[0])
    delta = geometry.wrap_angle(phi_p - phi_a)
    phi = phi_a + jnp.clip(delta, -_DETOUR_STEP, _DETOUR_STEP)
    waypoint = center + _DETOUR_RADIUS * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    waypoint = jnp.clip(waypoint, radius + 5.0, geometry.WORKSPACE - radius - 5.0)
    target = jnp.where(clear, pre, waypoint)
    a = _APPROACH_GAIN * (target - agent) / geometry.ACTION_SCALE
    a = a * jnp.minimum(1.0, approach_speed / jnp.maximum(jnp.linalg.norm(a), 1e-6))
    arrived = jnp.linalg.norm(pre - agent) < _ARRIVED
    return a, arrived

  def init(key, env_state):
    return pick(key, env_state.obs['state'])

  def act(pstate, env_state, key):
    sv = env_state.obs['state']
    k_pick, k_steps, k_noise, k_coin, k_rand = jax.random.split(key, 5)
    # Re-plan once a push (or a failed approach) has run out of steps.
    pstate = jax.tree.map(lambda n, o: jnp.where(pstate.steps_left <= 0, n, o),
                          pick(k_pick, sv), pstate)
    a_approach, arrived = approach_action(pstate, sv)
    start_push = ~pstate.pushing & arrived
    n_push = jax.random.randint(k_steps, (), push_steps[0], push_steps[1] + 1)
    pushing = pstate.pushing | start_push
    steps_left = jnp.where(start_push, n_push, pstate.steps_left)
    # A push that has slid off the block ends early.
    lost = pushing & (geometry.pusher_gap(sv) > _LOST)
    steps_left = jnp.where(lost, 0, steps_left)
    a_push = pstate.speed * _rotate(pstate.direction, sv[4])
    action = jnp.where(pushing, a_push, a_approach)
    # Noise: Gaussian perturbation and occasional uniform random actions.
    action = action + action_noise * jax.random.normal(k_noise, action.shape)
    random_action = jax.random.uniform(k_rand, action.shape, minval=low, maxval=high)
    action = jnp.where(jax.random.bernoulli(k_coin, random_prob), random_action, action)
    action = jnp.clip(action, low, high)
    return action, pstate._replace(pushing=pushing, steps_left=steps_left - 1)

  return Policy(init, act)
