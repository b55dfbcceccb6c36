"""PushT in MJX: a round pusher pushes a T-shaped block on a table (PAPER.md section 5).

Geometry and units follow gym-pusht / DINO-WM: a 512 x 512 px workspace with y pointing
DOWN (image rows), a pusher of radius 15 px, a T made of a 120 x 30 crossbar and a 30 x 90
stem below it. The block pose reported in the state is the midpoint of the crossbar's top
edge and the block angle, with the T's local frame mapped to the world by
`world = position + R(angle) @ local`, R = [[cos, -sin], [sin, cos]] (a positive angle
turns the T clockwise on screen). The T rotates about the point 45 px below the top-edge
midpoint (gym-pusht's centre of gravity).

Control (section 5): relative PD targets, as DINO-WM drives gym-pusht. A raw action a sets
the target `agent_xy + 100 a`, executed as given (no clipping of a or of the target; the
reference's pusher may leave the workspace), held over one env step of 10 physics substeps
of 0.01 s (10 Hz control); each substep applies the acceleration
`k_p (target - pos) - k_v vel` with k_p = 100, k_v = 20. `PushT(clip_actions=True)` clips a
to [-1, 1] and the target to [15, 497] px instead (not the reference).

Physics choices (the MJX scene), each checked against gym-pusht (pymunk) on scripted
pushes by `tests/test_referee.py`:
  * Simulated in units of 100 px (`_SCALE`); the state vector, targets and images are px.
  * The pusher is a sphere (MJX has no cylinder-box collision) on two slide joints, driven
    by the force `mass * PD acceleration`. gym-pusht's agent is kinematic (it ignores the
    block and the walls); here the pusher is 300x heavier than the block, so pushing slows
    it by < 1%, and it does not collide with the walls.
  * The block is a planar body (slide x, slide y, hinge z) whose joints sit at the centre
    of rotation. gym-pusht zeroes the block's velocity every substep (pymunk space damping
    0): the block moves only while pushed, by the contact impulses. Planar joints get no
    floor friction from contacts, so this is emulated with joint damping of time constant
    m / c = 0.008 s (a freed block keeps e^-12 of its speed one env step after contact
    ends). The rotational damping is the translational one times I / m, so a push turns
    the block as much, relative to how far it shifts it, as the reference's impulses do.
    The Euler integrator treats joint damping implicitly, so this stiff damping is stable.
  * The block's moment of inertia is the reference's as it is computed there, quirk
    included: gym-pusht sums `moment_for_poly` of the crossbar twice (the stem's term is
    computed from the crossbar's vertices), I = 2 x 1500 = 3000 px^2 for mass 1, not the
    7875 px^2 of the two boxes. The angle a push gives the block scales with m / I, so
    this constant is what makes the block turn like DINO-WM's data.
  * All contacts are frictionless (condim 1): pymunk shapes default to friction 0 (the
    reference sets `friction` on the bodies, which pymunk ignores). The block meets four
    walls where gym-pusht's segment walls (at 5 and 506 px, radius 2) have their inner
    faces: planes at 7 and 504 px. Contacts are stiffened (solimp 0.99); pushes penetrate
    ~0.5 px.
  * The constraint solver is capped (4 iterations, 8 line-search iterations): ~5x faster
    on batched contact scenes.

State S = 7: (agent x, agent y, block x, block y, block angle in [-pi, pi), agent vx,
agent vy) in px and px/s. Proprio P = 4: agent xy + agent velocity.
Success (section 5): the L2 norm of (agent xy, block xy) minus the goal's, as one
4-vector, < 20 px and the wrapped block-angle error < pi / 9.
"""

import jax
import jax.numpy as jnp
import mujoco
from jax import lax
from mujoco import mjx

from wmjax.envs import base
from wmjax.envs import pusht_expert as expert_lib
from wmjax.envs import render as render_lib
# The geometry, re-exported: `pusht.WORKSPACE`, `pusht.to_world`, ...
from wmjax.envs.pusht_geometry import ACTION_SCALE  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import BAR_CENTER  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import BAR_HALF  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import block_sdf  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import PIVOT  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import pusher_gap  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import PUSHER_RADIUS  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import STEM_CENTER  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import STEM_HALF  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import T_VERTICES  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import to_local  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import to_world  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import WALL_HIGH  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import WALL_LOW  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import WORKSPACE  # pylint: disable=unused-import
from wmjax.envs.pusht_geometry import wrap_angle  # pylint: disable=unused-import

# --- Evaluation problems (section 5). ---------------------------------------------------
PROBLEM_STEPS = 25     # Goal: this many env steps along the trajectory (DINO-WM goal_H 5 x 5).
PROBLEM_WARMUP = 50    # The start lies a uniform 0..50 expert steps into the trajectory.

# --- Control (section 5). --------------------------------------------------------------
KP = 100.0             # PD position gain, 1/s^2.
KV = 20.0              # PD velocity gain, 1/s.
SUBSTEPS = 10          # Physics substeps per env step.
TIMESTEP = 0.01        # Physics substep, s.

# --- Simulation. -----------------------------------------------------------------------
_SCALE = 100.0         # px per simulation unit.
_BLOCK_MASS = 1.0
_PUSHER_MASS = 300.0
_DAMPING_TIME = 0.008  # s: block velocity decays as exp(-t / _DAMPING_TIME) once free.


def _block_inertia() -> float:
  """The block's moment of inertia, sim units (mass `_BLOCK_MASS`), as gym-pusht computes it.

  gym-pusht gives its T (mass 1) `moment_for_poly(crossbar) + moment_for_poly(crossbar)`
  (the second term was meant for the stem but reuses the crossbar's vertices), each about
  the top-edge midpoint with the full mass: 2 x 1500 = 3000 px^2. DINO-WM's data and the
  paper's numbers come from that simulator, so its value is the spec.
  """
  (hw, hh), (cx, cy) = BAR_HALF, BAR_CENTER
  crossbar = ((2 * hw)**2 + (2 * hh)**2) / 12.0 + cx**2 + cy**2
  return _BLOCK_MASS * 2.0 * crossbar / _SCALE**2


def _model_xml() -> str:
  s = _SCALE
  inertia = _block_inertia()
  c_lin = _BLOCK_MASS / _DAMPING_TIME
  c_rot = inertia / _DAMPING_TIME
  w = WORKSPACE / s
  lo, hi = WALL_LOW / s, WALL_HIGH / s
  bar = (BAR_CENTER[0] - PIVOT[0], BAR_CENTER[1] - PIVOT[1])
  stem = (STEM_CENTER[0] - PIVOT[0], STEM_CENTER[1] - PIVOT[1])
  return f"""
<mujoco model="pusht">
  <option timestep="{TIMESTEP}" gravity="0 0 0" integrator="Euler" iterations="4"
          ls_iterations="8"/>
  <default>
    <geom condim="1" friction="0 0 0" solimp="0.99 0.99 0.001"/>
  </default>
  <worldbody>
    <!-- Collision groups: walls (2) meet the block (3) only; the pusher (1) meets the block. -->
    <geom name="wall_left" type="plane" size="0 0 1" pos="{lo} {w / 2} 0" zaxis="1 0 0"
          contype="2" conaffinity="2"/>
    <geom name="wall_right" type="plane" size="0 0 1" pos="{hi} {w / 2} 0" zaxis="-1 0 0"
          contype="2" conaffinity="2"/>
    <geom name="wall_top" type="plane" size="0 0 1" pos="{w / 2} {lo} 0" zaxis="0 1 0"
          contype="2" conaffinity="2"/>
    <geom name="wall_bottom" type="plane" size="0 0 1" pos="{w / 2} {hi} 0" zaxis="0 -1 0"
          contype="2" conaffinity="2"/>
    <body name="pusher">
      <joint name="pusher_x" type="slide" axis="1 0 0"/>
      <joint name="pusher_y" type="slide" axis="0 1 0"/>
      <geom name="pusher" type="sphere" size="{PUSHER_RADIUS / s}" mass="{_PUSHER_MASS}"
            contype="1" conaffinity="1"/>
    </body>
    <body name="block">
      <joint name="block_x" type="slide" axis="1 0 0" damping="{c_lin}"/>
      <joint name="block_y" type="slide" axis="0 1 0" damping="{c_lin}"/>
      <joint name="block_angle" type="hinge" axis="0 0 1" damping="{c_rot}"/>
      <inertial pos="0 0 0" mass="{_BLOCK_MASS}" diaginertia="{inertia} {inertia} {inertia}"/>
      <geom name="bar" type="box" pos="{bar[0] / s} {bar[1] / s} 0"
            size="{BAR_HALF[0] / s} {BAR_HALF[1] / s} 0.1" contype="3" conaffinity="3"/>
      <geom name="stem" type="box" pos="{stem[0] / s} {stem[1] / s} 0"
            size="{STEM_HALF[0] / s} {STEM_HALF[1] / s} 0.1" contype="3" conaffinity="3"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="pusher_x"/>
    <motor joint="pusher_y"/>
  </actuator>
</mujoco>
"""


def _rot(angle: jax.Array) -> jax.Array:
  """(2, 2) rotation matrix (local -> world)."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.array([[c, -s], [s, c]])


class PushT(base.Env):
  """PushT task (module docstring has the physics); one instance, vmap to batch.

  Args:
    clip_actions: clip raw actions to [-1, 1] and PD targets to the workspace. Off by
      default: gym-pusht in DINO-WM's relative mode executes `agent + 100 a` as given.
  """

  name = 'pusht'
  state_size = 7
  proprio_size = 4
  action_size = 2
  dt = SUBSTEPS * TIMESTEP
  contact_tolerance = 1.0  # px: `pusher_gap` below this counts as contact (metrics).

  def __init__(self, clip_actions: bool = False):
    self.clip_actions = bool(clip_actions)
    self._mj_model = mujoco.MjModel.from_xml_string(_model_xml())
    self._model = mjx.put_model(self._mj_model)

  # --- Simulator <-> state vector. ---------------------------------------------------

  def _from_data(self, data: mjx.Data) -> jax.Array:
    qpos, qvel = data.qpos, data.qvel
    angle = qpos[4]
    pivot = jnp.asarray(PIVOT)
    top = qpos[2:4] * _SCALE - _rot(angle) @ pivot
    return jnp.concatenate([qpos[:2] * _SCALE, top, wrap_angle(angle)[None],
                            qvel[:2] * _SCALE]).astype(jnp.float32)

  def _make_state(self, data: mjx.Data) -> base.State:
    sv = self._from_data(data)
    zero = jnp.zeros((), jnp.float32)
    return base.State(
        data=data, obs={'state': sv, 'proprio': self._proprio_of(sv)}, reward=zero,
        done=zero,
        metrics={'contact': (pusher_gap(sv) < self.contact_tolerance).astype(jnp.float32)})

  @staticmethod
  def _proprio_of(sv: jax.Array) -> jax.Array:
    return jnp.concatenate([sv[:2], sv[5:7]])

  def reset_to(self, state_vector: jax.Array) -> base.State:
    sv = jnp.asarray(state_vector, jnp.float32)
    if sv.shape != (self.state_size,):
      raise ValueError(f'pusht: state_vector must have shape (7,), got {sv.shape}.')
    pivot_world = to_world(sv, jnp.asarray(PIVOT))
    qpos = jnp.concatenate([sv[:2], pivot_world]) / _SCALE
    qpos = jnp.concatenate([qpos, sv[4:5]])
    qvel = jnp.concatenate([sv[5:7] / _SCALE, jnp.zeros(3)])
    data = mjx.make_data(self._model)
    data = data.replace(qpos=qpos, qvel=qvel)
    return self._make_state(data)

  def reset(self, key: jax.Array) -> base.State:
    """gym-pusht's start distribution: agent in [50, 450]^2, block in [100, 400]^2, angle
    uniform; poses where the pusher overlaps the T or the T leaves the workspace are
    rejected (first valid of 16 candidates)."""
    num = 16
    k_agent, k_block, k_angle = jax.random.split(key, 3)
    agent = jax.random.uniform(k_agent, (num, 2), minval=50.0, maxval=450.0)
    block = jax.random.uniform(k_block, (num, 2), minval=100.0, maxval=400.0)
    angle = jax.random.uniform(k_angle, (num, 1), minval=-jnp.pi, maxval=jnp.pi)
    svs = jnp.concatenate([agent, block, angle, jnp.zeros((num, 2))], -1)
    valid = jax.vmap(self._valid_start)(svs)
    index = jnp.where(valid.any(), jnp.argmax(valid), num - 1)
    return self.reset_to(svs[index])

  @staticmethod
  def _valid_start(sv: jax.Array, margin: float = 5.0) -> jax.Array:
    corners = to_world(sv, jnp.asarray(T_VERTICES))
    inside = jnp.all((corners > margin) & (corners < WORKSPACE - margin))
    return inside & (pusher_gap(sv) > margin)

  # --- Dynamics. ----------------------------------------------------------------------

  def step(self, state: base.State, action: jax.Array) -> base.State:
    self.check_action(action)
    data = state.data
    # Section 5: relative PD target, held for the whole env step.
    if self.clip_actions:
      action = jnp.clip(action, self.action_low, self.action_high)
    target = data.qpos[:2] + ACTION_SCALE / _SCALE * action
    if self.clip_actions:
      target = jnp.clip(target, PUSHER_RADIUS / _SCALE, (WORKSPACE - PUSHER_RADIUS) / _SCALE)

    def substep(d, _):
      acc = KP * (target - d.qpos[:2]) - KV * d.qvel[:2]
      d = d.replace(ctrl=_PUSHER_MASS * acc)
      return mjx.step(self._model, d), None

    data, _ = lax.scan(substep, data, None, length=SUBSTEPS)
    return self._make_state(data)

  def state_vector(self, state: base.State) -> jax.Array:
    return state.obs['state']

  def proprio(self, state: base.State) -> jax.Array:
    return state.obs['proprio']

  # --- Rendering. ---------------------------------------------------------------------

  def render(self, state_vector: jax.Array, size: int = 64,
             goal: jax.Array | None = None) -> jax.Array:
    """Top-down image.

    Args:
      state_vector: (7,) state.
      size: image side in pixels (static).
      goal: optional (7,) goal state whose T is drawn as an outline (off by default).

    Returns:
      (size, size, 3) float32 RGB in [0, 1].
    """
    xs, ys = render_lib.pixel_centers(size, WORKSPACE)
    soft = render_lib.pixel_size(size, WORKSPACE)
    layers = []
    if goal is not None:
      sdf = _t_sdf_image(xs, ys, goal)
      width = max(2.0 * soft, 4.0)
      outline = render_lib.coverage(jnp.abs(sdf) - 0.5 * width, soft)
      layers.append((outline, jnp.array([0.35, 0.75, 0.35])))
    block = render_lib.coverage(_t_sdf_image(xs, ys, state_vector), soft)
    layers.append((block, jnp.array([0.47, 0.53, 0.60])))
    agent = render_lib.coverage(
        render_lib.sdf_disk(xs, ys, state_vector[0], state_vector[1], PUSHER_RADIUS), soft)
    layers.append((agent, jnp.array([0.25, 0.41, 0.88])))
    return render_lib.composite(jnp.array([0.94, 0.94, 0.94]), layers)

  # --- Evaluation. --------------------------------------------------------------------

  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    pos_err, angle_err = _errors(state_vector, goal)
    return (pos_err < 20.0) & (angle_err < jnp.pi / 9)  # Section 5.

  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    """sqrt(|4-vector position error|^2 + (60 px * angle error)^2), px: the angle error
    counts as the arc travelled by a crossbar end."""
    pos_err, angle_err = _errors(state_vector, goal)
    return jnp.sqrt(pos_err**2 + (BAR_HALF[0] * angle_err)**2)

  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Section 5 / DINO-WM: start at a random point of a held-out expert trajectory and take
    as goal the state 25 env steps further along it (always reachable). The trajectory
    starts at a reset; the start is after a uniform 0-`PROBLEM_WARMUP` expert steps, so
    the pusher is usually already at the block, as mid-trajectory starts are."""
    return _expert_problem(self, expert_lib.pusht_expert(self), key, PROBLEM_STEPS,
                           PROBLEM_WARMUP)

  # --- Actions. -----------------------------------------------------------------------

  @property
  def action_low(self) -> jax.Array:
    return -jnp.ones((2,))

  @property
  def action_high(self) -> jax.Array:
    return jnp.ones((2,))

  @property
  def action_std(self) -> jax.Array:
    """Nominal std of raw behaviour actions: the scripted expert measures ~0.24 per axis
    (DINO-WM's PushT data: ~0.2)."""
    return jnp.full((2,), 0.24)


def _errors(state_vector: jax.Array, goal: jax.Array) -> tuple[jax.Array, jax.Array]:
  pos_err = jnp.linalg.norm(state_vector[:4] - goal[:4])
  angle_err = jnp.abs(wrap_angle(state_vector[4] - goal[4]))
  return pos_err, angle_err


def _t_sdf_image(xs: jax.Array, ys: jax.Array, sv: jax.Array) -> jax.Array:
  """(size, size) signed distance to the T of state `sv` (px)."""
  angle = sv[4]
  boxes = []
  for center, half in ((BAR_CENTER, BAR_HALF), (STEM_CENTER, STEM_HALF)):
    c = to_world(sv, jnp.asarray(center, jnp.float32))
    boxes.append(render_lib.sdf_box(xs, ys, c[0], c[1], half[0], half[1], angle))
  return jnp.minimum(boxes[0], boxes[1])


def _expert_problem(env: PushT, policy, key: jax.Array, steps: int,
                    warmup: int) -> tuple[jax.Array, jax.Array]:
  """(start (7,), state `steps` policy steps later (7,)) along one policy trajectory from a
  random reset, the start after a uniform number of steps in [0, warmup]."""
  k_reset, k_init, k_roll, k_offset = jax.random.split(key, 4)
  state = env.reset(k_reset)
  pstate = policy.init(k_init, state)

  def body(carry, k):
    s, p = carry
    a, p = policy.act(p, s, k)
    s = env.step(s, a)
    return (s, p), env.state_vector(s)

  _, path = lax.scan(body, (state, pstate), jax.random.split(k_roll, warmup + steps))
  path = jnp.concatenate([env.state_vector(state)[None], path])
  offset = jax.random.randint(k_offset, (), 0, warmup + 1)
  return path[offset], path[offset + steps]
