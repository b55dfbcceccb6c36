"""PointMaze: a point mass in the D4RL maze2d U-maze, simulated with MJX.

Paper section 5. Same model as D4RL's `maze2d-umaze` (and DINO-WM's copy of it):
ball radius 0.1 (density 1000), slide joints with damping 1, motors of gear 100 with
ctrl in [-1, 1], timestep 0.01, Euler integration, frictionless (condim 1) contacts
with 1 x 1 wall cells; the ball body sits at (1.2, 1.2) and wall cell (row, col) of
the layout at (row + 1, col + 1), so the state is D4RL's (qpos, qvel). One env step
clips the velocity to +-5 and then runs 5 simulator steps (D4RL's frame_skip).

Differences from D4RL, none of which changes the reachable states:
  * the wall cells are merged into maximal rectangles (5 boxes instead of 16 cubes:
    the same free space, fewer collision pairs);
  * the ground plane is left out (its contact acts along z, which has no joint);
  * the constraint solver is capped (4 iterations, 8 line-search iterations), which
    converges for these frictionless sphere-box contacts and is much faster in MJX.
"""

import functools

import jax
import jax.numpy as jnp
import mujoco
from mujoco import mjx
import numpy as np

from wmjax.envs import base
from wmjax.envs import render as rd

# D4RL's U_MAZE ('#' wall, 'O' free, 'G' the D4RL goal cell, free here).
U_MAZE = '\n'.join([
    '#####',
    '#GOO#',
    '###O#',
    '#OOO#',
    '#####',
])

BALL_RADIUS = 0.1
BODY_OFFSET = 1.2      # Ball body position: qpos (0, 0) is world (1.2, 1.2).
MAX_SPEED = 5.0        # D4RL clips qvel to +-5 before each env step.
SUCCESS_RADIUS = 0.5   # Paper section 5: position distance < 0.5.
# Positions are sampled at least this far from walls (ball radius + 0.1), as DINO-WM's
# evaluation sampler does (x in [0.5, 1.1] in a corridor spanning [0.3, 1.3]).
SAMPLE_CLEARANCE = 0.2
# Evaluation problems (DINO-WM env/pointmaze `sample_random_init_goal_states`): start and goal
# velocities uniform in +-5.2262554 per axis; start and goal independent (no separation).
EVAL_MAX_SPEED = 5.2262554
_NUM_CANDIDATES = 64   # Rejection-sampling candidates (~40% valid: failure odds < 1e-11).

_BACKGROUND_RGB = (0.15, 0.25, 0.35)
_WALL_RGB = (0.7, 0.5, 0.3)
_BALL_RGB = (0.3, 0.6, 0.3)
_MARKER_RADIUS = 0.2   # D4RL draws the ball as a 0.2 site (its geom is transparent).


def parse_layout(layout: str) -> np.ndarray:
  """(rows, cols) bool array, True for wall cells. Rows are the layout's lines."""
  lines = [line for line in layout.strip().split('\n')]
  if len({len(line) for line in lines}) != 1:
    raise ValueError('maze layout lines must all have the same length.')
  bad = {c for line in lines for c in line} - set('#OG ')
  if bad:
    raise ValueError(f'unknown maze tiles {sorted(bad)}; use "#" (wall), "O", "G" or " ".')
  return np.array([[c == '#' for c in line] for line in lines])


def wall_rectangles(walls: np.ndarray) -> list[tuple[int, int, int, int]]:
  """Covers the wall cells with few rectangles (row0, row1, col0, col1), inclusive."""
  covered = np.zeros_like(walls)
  rects = []
  rows, cols = walls.shape
  for r in range(rows):
    for c in range(cols):
      if not walls[r, c] or covered[r, c]:
        continue
      c1 = c
      while c1 + 1 < cols and walls[r, c1 + 1]:
        c1 += 1
      r1 = r
      while r1 + 1 < rows and walls[r1 + 1, c:c1 + 1].all():
        r1 += 1
      covered[r:r1 + 1, c:c1 + 1] = True
      rects.append((r, r1, c, c1))
  return rects


def _boxes(layout: str) -> list[tuple[float, float, float, float]]:
  """Wall boxes (world cx, world cy, half x, half y); cell (r, c) is at (r+1, c+1)."""
  out = []
  for r0, r1, c0, c1 in wall_rectangles(parse_layout(layout)):
    out.append(((r0 + r1) / 2 + 1.0, (c0 + c1) / 2 + 1.0,
                (r1 - r0 + 1) / 2, (c1 - c0 + 1) / 2))
  return out


def make_xml(layout: str = U_MAZE, solver_iterations: int = 4,
             ls_iterations: int = 8) -> str:
  """MJCF of the point maze (D4RL maze2d parameters, see the module docstring)."""
  walls = '\n'.join(
      f'    <geom name="wall_{i}" type="box" pos="{cx} {cy} 0" size="{hx} {hy} 0.2"'
      ' rgba=".7 .5 .3 1"/>'
      for i, (cx, cy, hx, hy) in enumerate(_boxes(layout)))
  return f"""
<mujoco model="point_maze">
  <compiler inertiafromgeom="true" angle="radian"/>
  <option timestep="0.01" gravity="0 0 0" integrator="Euler"
          iterations="{solver_iterations}" ls_iterations="{ls_iterations}"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1"
          contype="2" conaffinity="1"/>
  </default>
  <worldbody>
    <body name="particle" pos="{BODY_OFFSET} {BODY_OFFSET} 0">
      <geom name="particle_geom" type="sphere" size="{BALL_RADIUS}" contype="1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
{walls}
  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>
"""


def wall_distance(layout: str, pos: jax.Array) -> jax.Array:
  """() signed distance from a ball CENTRE at qpos `pos` (2,) to the nearest wall."""
  x = pos[0] + BODY_OFFSET
  y = pos[1] + BODY_OFFSET
  d = [rd.sdf_box(x, y, cx, cy, hx, hy, 0.0) for cx, cy, hx, hy in _boxes(layout)]
  return functools.reduce(jnp.minimum, d)


def _image_grid(size: int, extent: float):
  """Pixel centres in world (x, y): image rows follow world x, columns world y.

  The image shows the layout as its string reads (row r of the string at the top
  when r = 0); world coordinates start at 0.5, the outer wall's edge.
  """
  cols, rows = rd.pixel_centers(size, extent)
  return rows + 0.5, cols + 0.5


@functools.lru_cache(maxsize=16)
def _wall_layer(layout: str, size: int) -> np.ndarray:
  """(size, size) wall coverage, a constant per layout and image size."""
  extent = float(max(parse_layout(layout).shape))
  with jax.ensure_compile_time_eval():
    wx, wy = _image_grid(size, extent)
    sdf = functools.reduce(jnp.minimum, [
        rd.sdf_box(wx, wy, cx, cy, hx, hy, 0.0) for cx, cy, hx, hy in _boxes(layout)])
    return np.asarray(rd.coverage(sdf, rd.pixel_size(size, extent)))


class PointMaze(base.Env):
  """D4RL maze2d U-maze in MJX: S = 4 (x, y, vx, vy), P = 4, A = 2 in [-1, 1]."""

  name = 'pointmaze'
  state_size = 4
  proprio_size = 4
  action_size = 2

  def __init__(self, layout: str = U_MAZE, substeps: int = 5, solver_iterations: int = 4,
               ls_iterations: int = 8, clip_actions: bool = True):
    """Builds the MJCF model and copies it to the device once.

    Args:
      layout: maze string, rows separated by newlines ('#' wall).
      substeps: simulator steps of 0.01 s per env step (D4RL frame_skip: 5).
      solver_iterations: constraint solver iterations.
      ls_iterations: solver line-search iterations.
      clip_actions: must be True: the reference clips forces to [-1, 1] (the motors'
        ctrlrange); accepted so every task takes the same option.
    """
    if not clip_actions:
      raise ValueError('pointmaze: clip_actions=False is not supported; the reference '
                       '(D4RL / gymnasium-robotics) clips forces to [-1, 1].')
    self.clip_actions = True
    if substeps < 1:
      raise ValueError(f'substeps must be >= 1, got {substeps}.')
    free = ~parse_layout(layout)
    if not free.any():
      raise ValueError('maze layout has no free cell.')
    self.layout = layout
    self.substeps = int(substeps)
    self.xml = make_xml(layout, solver_iterations, ls_iterations)
    self.mj_model = mujoco.MjModel.from_xml_string(self.xml)
    self.mjx_model = mjx.put_model(self.mj_model)
    self.dt = float(self.mj_model.opt.timestep) * self.substeps
    self.extent = float(max(free.shape))

  # -- state ----------------------------------------------------------------
  def _state(self, data) -> base.State:
    vec = jnp.concatenate([data.qpos, data.qvel]).astype(jnp.float32)
    return base.State(
        data=data,
        obs={'state': vec, 'proprio': vec},
        reward=jnp.zeros((), jnp.float32),
        done=jnp.zeros((), jnp.float32),
        metrics={},
        info={},
    )

  def reset_to(self, state_vector: jax.Array) -> base.State:
    if state_vector.shape != (self.state_size,):
      raise ValueError(
          f'pointmaze: state vector must have shape (4,), got {state_vector.shape}.')
    data = mjx.make_data(self.mjx_model)
    data = data.replace(qpos=state_vector[:2].astype(data.qpos.dtype),
                        qvel=state_vector[2:].astype(data.qvel.dtype))
    return self._state(data)

  def _sample_positions(self, key: jax.Array, n: int) -> jax.Array:
    """(n, 2) qpos candidates uniform in the bounding box of the free cells."""
    free = ~parse_layout(self.layout)
    rows, cols = np.nonzero(free)
    # Free cell (r, c) spans qpos [r - 0.7, r + 0.3] x [c - 0.7, c + 0.3].
    lo = np.array([rows.min(), cols.min()]) - 0.5 + 1.0 - BODY_OFFSET
    hi = np.array([rows.max(), cols.max()]) + 0.5 + 1.0 - BODY_OFFSET
    return jax.random.uniform(key, (n, 2), minval=lo, maxval=hi)

  def _valid(self, pos: jax.Array) -> jax.Array:
    return wall_distance(self.layout, pos) >= SAMPLE_CLEARANCE

  def sample_position(self, key: jax.Array) -> jax.Array:
    """(2,) qpos uniform over the corridors, >= 0.2 from walls (rejection sampling)."""
    cands = self._sample_positions(key, _NUM_CANDIDATES)
    ok = jax.vmap(self._valid)(cands)
    return cands[jnp.argmax(ok)]

  def reset(self, key: jax.Array) -> base.State:
    """Uniform position in the corridors, velocity N(0, 0.1^2) as in D4RL."""
    k_pos, k_vel = jax.random.split(key)
    vel = 0.1 * jax.random.normal(k_vel, (2,))
    return self.reset_to(jnp.concatenate([self.sample_position(k_pos), vel]))

  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """DINO-WM's evaluation sampler (`goal_source: random_state`): start and goal drawn
    independently, uniform in the corridors, each with a velocity uniform in
    +-`EVAL_MAX_SPEED` per axis; no minimum separation (a start may already succeed)."""
    k_start, k_goal, k_vel = jax.random.split(key, 3)
    start = self.sample_position(k_start)
    goal = self.sample_position(k_goal)
    vel = jax.random.uniform(k_vel, (2, 2), minval=-EVAL_MAX_SPEED, maxval=EVAL_MAX_SPEED)
    return jnp.concatenate([start, vel[0]]), jnp.concatenate([goal, vel[1]])

  # -- dynamics ---------------------------------------------------------------
  def step(self, state: base.State, action: jax.Array) -> base.State:
    """Clip the velocity to +-5, then `substeps` MJX steps with ctrl = clip(action)."""
    self.check_action(action)
    data = state.data
    ctrl = jnp.clip(action, -1.0, 1.0).astype(data.ctrl.dtype)
    data = data.replace(qvel=jnp.clip(data.qvel, -MAX_SPEED, MAX_SPEED), ctrl=ctrl)

    def substep(d, _):
      return mjx.step(self.mjx_model, d), None

    data, _ = jax.lax.scan(substep, data, None, length=self.substeps)
    return self._state(data)

  def state_vector(self, state: base.State) -> jax.Array:
    return state.obs['state']

  def proprio(self, state: base.State) -> jax.Array:
    return state.obs['proprio']

  # -- rendering and evaluation -------------------------------------------------
  def render(self, state_vector: jax.Array, size: int = 64) -> jax.Array:
    """(size, size, 3) float32 top-down view: walls, ball marker (radius 0.2)."""
    wx, wy = _image_grid(size, self.extent)
    ball = rd.coverage(
        rd.sdf_disk(wx, wy, state_vector[0] + BODY_OFFSET, state_vector[1] + BODY_OFFSET,
                    _MARKER_RADIUS),
        rd.pixel_size(size, self.extent))
    walls = jnp.asarray(_wall_layer(self.layout, size))
    return rd.composite(jnp.asarray(_BACKGROUND_RGB),
                        [(walls, jnp.asarray(_WALL_RGB)), (ball, jnp.asarray(_BALL_RGB))])

  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    """Position distance (velocities ignored)."""
    return jnp.linalg.norm(state_vector[:2] - goal[:2])

  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return self.distance(state_vector, goal) < SUCCESS_RADIUS

  @property
  def action_low(self) -> jax.Array:
    return -jnp.ones((2,), jnp.float32)

  @property
  def action_high(self) -> jax.Array:
    return jnp.ones((2,), jnp.float32)

  @property
  def action_std(self) -> jax.Array:
    """Std of uniform [-1, 1] actions, 1 / sqrt(3)."""
    return jnp.full((2,), 1.0 / np.sqrt(3.0), jnp.float32)
