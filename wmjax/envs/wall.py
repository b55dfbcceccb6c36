"""Wall: a dot in a square world split by a wall with one door (DINO-WM DotWall).

Paper section 5. The reference task is kinematic, not physical: next = pos + 2 a, and
a move that would cross the wall or a border stops where it meets it. There is no
mass, velocity or contact force to simulate, so the task is written in pure JAX (a
physics engine would only add cost and approximate the rule). The step is
differentiable almost everywhere (zero gradient while blocked).

Geometry (world units = pixels of the reference 65 x 65 image, y down):
  * the dot moves in the box [4, 60]^2 (border walls at 4 and 60);
  * the wall fills x in [29, 35] except the door, y in [26, 34];
  * the dot is a point for collisions; a blocked move stops ON the wall face it hits
    (the face coordinate is set exactly, so the dot never enters the wall).

Two behaviours of the reference code are deliberately not reproduced: a purely
vertical move into a border returned NaN there (a 0/0 line fit), and a vertical move
inside the door column could enter the wall above or below the door (only the wall's
x faces were tested). Here the door's horizontal faces block like any other face.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wmjax.envs import base
from wmjax.envs import render as rd

# Geometry of the reference DotWall (paper section 5).
WORLD = 65.0           # World side; the reference image is 65 x 65 px.
LOW, HIGH = 4.0, 60.0  # Border walls.
WALL_X0, WALL_X1 = 29.0, 35.0  # Wall centred at x = 32, width 6.
DOOR_Y0, DOOR_Y1 = 26.0, 34.0  # Door band.
STEP_SCALE = 2.0       # next = pos + 2 a.
DOT_STD = 1.7          # Gaussian dot, world units.
SUCCESS_RADIUS = 4.5   # Success: distance < 4.5.
# Sampling margin from borders / wall (reference: border + 2 * dot std).
_PAD = 2.0 * DOT_STD

_DOT_RGB = (1.0, 0.0, 0.0)
_WALL_RGB = (0.0, 0.0, 0.0)
_BACKGROUND_RGB = (1.0, 1.0, 1.0)


def _safe_div(num, den):
  """num / den, +inf where den == 0 (finite gradients)."""
  ok = den != 0.0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), jnp.inf)


def inside_wall(pos: jax.Array) -> jax.Array:
  """() bool: `pos` (2,) is strictly inside the wall (outside the door band)."""
  x, y = pos[0], pos[1]
  in_column = (x > WALL_X0) & (x < WALL_X1)
  return in_column & ((y < DOOR_Y0) | (y > DOOR_Y1))


def move(pos: jax.Array, action: jax.Array, clip: bool = False) -> jax.Array:
  """One DotWall transition (paper section 5: next = pos + 2 a, blocked by walls).

  Args:
    pos: (2,) current position, inside the free space.
    action: (2,) raw action; executed as given (the reference moves 2 a for any a), or
      clipped to [-1, 1] first when `clip`.
    clip: static; clip the action to [-1, 1].

  Returns:
    (2,) next position: pos + 2 a, or the first point where the segment meets a
    border or a wall face.
  """
  a = jnp.clip(action, -1.0, 1.0) if clip else action
  d = STEP_SCALE * a
  p = pos
  q = p + d
  px, py, qx, qy, dx, dy = p[0], p[1], q[0], q[1], d[0], d[1]

  def x_face(c, hit, blocked_if):
    """A face on the line x = c: (time, blocked, contact point)."""
    t = _safe_div(c - px, dx)
    y = py + jnp.clip(t, 0.0, 1.0) * dy
    return t, hit & blocked_if(y), jnp.stack([jnp.asarray(c, p.dtype), y])

  def y_face(c, hit, blocked_if):
    t = _safe_div(c - py, dy)
    x = px + jnp.clip(t, 0.0, 1.0) * dx
    return t, hit & blocked_if(x), jnp.stack([x, jnp.asarray(c, p.dtype)])

  always = lambda _: True
  outside_door = lambda y: (y < DOOR_Y0) | (y > DOOR_Y1)
  over_column = lambda x: (x >= WALL_X0) & (x <= WALL_X1)
  faces = [
      x_face(LOW, qx < LOW, always),
      x_face(HIGH, qx > HIGH, always),
      y_face(LOW, qy < LOW, always),
      y_face(HIGH, qy > HIGH, always),
      # Wall's x faces, entered from the left / right room.
      x_face(WALL_X0, (px <= WALL_X0) & (qx > WALL_X0), outside_door),
      x_face(WALL_X1, (px >= WALL_X1) & (qx < WALL_X1), outside_door),
      # Door's horizontal faces, entered from inside the door band.
      y_face(DOOR_Y0, (py >= DOOR_Y0) & (qy < DOOR_Y0), over_column),
      y_face(DOOR_Y1, (py <= DOOR_Y1) & (qy > DOOR_Y1), over_column),
  ]
  ts = jnp.stack([jnp.where(blocked, t, jnp.inf) for t, blocked, _ in faces])
  points = jnp.stack([pt for _, _, pt in faces])
  first = jnp.argmin(ts)
  blocked = jnp.isfinite(ts[first])
  nxt = jnp.where(blocked, points[first], q)
  # Guards against rounding at corners: never leave the box, never enter the wall.
  nxt = jnp.clip(nxt, LOW, HIGH)
  return jnp.where(inside_wall(nxt), p, nxt)


@functools.lru_cache(maxsize=16)
def _static_layer(size: int) -> np.ndarray:
  """(size, size) coverage of the borders and the wall: a constant per image size."""
  with jax.ensure_compile_time_eval():
    xs, ys = _grid(size)
    soft = rd.pixel_size(size, WORLD)
    # The reference draws 1 px lines on the borders and pixels 29..35 of the wall,
    # door pixels 26..34 open: boxes grown by half a pixel of the 65 px image.
    sdfs = [
        rd.sdf_box(xs, ys, LOW, WORLD / 2, 0.5, WORLD, 0.0),
        rd.sdf_box(xs, ys, HIGH, WORLD / 2, 0.5, WORLD, 0.0),
        rd.sdf_box(xs, ys, WORLD / 2, LOW, WORLD, 0.5, 0.0),
        rd.sdf_box(xs, ys, WORLD / 2, HIGH, WORLD, 0.5, 0.0),
    ]
    wall_cx = (WALL_X0 + WALL_X1) / 2
    wall_hw = (WALL_X1 - WALL_X0) / 2 + 0.5
    low_h = (DOOR_Y0 - 0.5 - (-WORLD)) / 2
    high_h = (2 * WORLD - (DOOR_Y1 + 0.5)) / 2
    sdfs.append(rd.sdf_box(xs, ys, wall_cx, -WORLD + low_h, wall_hw, low_h, 0.0))
    sdfs.append(rd.sdf_box(xs, ys, wall_cx, DOOR_Y1 + 0.5 + high_h, wall_hw, high_h, 0.0))
    sdf = functools.reduce(jnp.minimum, sdfs)
    return np.asarray(rd.coverage(sdf, soft))


def _grid(size: int) -> tuple[jax.Array, jax.Array]:
  # World point k sits at the centre of pixel k of the 65 px reference image.
  xs, ys = rd.pixel_centers(size, WORLD)
  return xs - 0.5, ys - 0.5


class Wall(base.Env):
  """DotWall (paper section 5): S = 2 (x, y), P = 2 (x, y), A = 2 (nominally [-1, 1]).

  Args:
    clip_actions: clip raw actions to [-1, 1] before the move. Off by default: DINO-WM's
      DotWall moves the dot by 2 a for any a (a = (3, 0) moves 6 px), and the paper's
      unbounded gradient planner is executed as planned.
  """

  name = 'wall'
  state_size = 2
  proprio_size = 2
  action_size = 2
  dt = 1.0  # One kinematic move per env step; no physical time.

  def __init__(self, clip_actions: bool = False):
    self.clip_actions = bool(clip_actions)

  def _state(self, pos: jax.Array) -> base.State:
    pos = jnp.asarray(pos, jnp.float32)
    return base.State(
        data=pos,
        obs={'state': pos, 'proprio': pos},
        reward=jnp.zeros((), jnp.float32),
        done=jnp.zeros((), jnp.float32),
        metrics={},
        info={},
    )

  def _sample_room(self, key: jax.Array, right: jax.Array) -> jax.Array:
    """(2,) uniform position in the left (right=False) or right room, padded."""
    kx, ky = jax.random.split(key)
    x_lo = jnp.where(right, WALL_X1 + _PAD, LOW + _PAD)
    x_hi = jnp.where(right, HIGH - _PAD, WALL_X0 - _PAD)
    x = jax.random.uniform(kx, (), minval=x_lo, maxval=x_hi)
    y = jax.random.uniform(ky, (), minval=LOW + _PAD, maxval=HIGH - _PAD)
    return jnp.stack([x, y])

  def reset(self, key: jax.Array) -> base.State:
    """Uniform position in a random room (behaviour-data start)."""
    k_side, k_pos = jax.random.split(key)
    return self._state(self._sample_room(k_pos, jax.random.bernoulli(k_side)))

  def reset_to(self, state_vector: jax.Array) -> base.State:
    if state_vector.shape != (self.state_size,):
      raise ValueError(f'wall: state vector must have shape (2,), got {state_vector.shape}.')
    return self._state(state_vector)

  def step(self, state: base.State, action: jax.Array) -> base.State:
    self.check_action(action)
    return self._state(move(state.data, action, self.clip_actions))

  def state_vector(self, state: base.State) -> jax.Array:
    return state.data

  def proprio(self, state: base.State) -> jax.Array:
    return state.data

  def render(self, state_vector: jax.Array, size: int = 64) -> jax.Array:
    """(size, size, 3) float32: white, red Gaussian dot (std 1.7), black walls."""
    xs, ys = _grid(size)
    dot = rd.gaussian_blob(xs, ys, state_vector[0], state_vector[1], DOT_STD)
    walls = jnp.asarray(_static_layer(size))
    # The reference paints the walls over the dot.
    return rd.composite(jnp.asarray(_BACKGROUND_RGB),
                        [(dot, jnp.asarray(_DOT_RGB)), (walls, jnp.asarray(_WALL_RGB))])

  def distance(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return jnp.linalg.norm(state_vector[:2] - goal[:2])

  def success(self, state_vector: jax.Array, goal: jax.Array) -> jax.Array:
    return self.distance(state_vector, goal) < SUCCESS_RADIUS

  def sample_problem(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Start uniform in one room, goal uniform in the other; random side."""
    k_side, k_start, k_goal = jax.random.split(key, 3)
    start_right = jax.random.bernoulli(k_side)
    return (self._sample_room(k_start, start_right),
            self._sample_room(k_goal, jnp.logical_not(start_right)))

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
