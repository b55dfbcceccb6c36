"""Cross-checks of our simulators against the reference packages (the `referee` extra).

PushT against gym-pusht (pymunk), the simulator DINO-WM's data and the paper's numbers come
from: scripted pushes, one step at a time from the reference's own states and whole 25-step
pushes. PointMaze against gymnasium-robotics' point-maze model (its MJCF, its velocity clip)
run at D4RL's frame skip of 5: constant-force motion and wall contact. Wall has no package
(DINO-WM's DotWall is not published on the registry); tests/test_envs.py checks its rule.

The pushes and states are drawn from fixed seeds; the thresholds are the fidelity targets
(contact steps: median block error < 1 px and < 0.01 rad; a whole push turns the block
within 25% of the reference).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_EXTRA = 'install the referee extra: pip install -e ".[referee]" (the test extra has it)'
gym = pytest.importorskip('gymnasium', reason=_EXTRA)
pytest.importorskip('gym_pusht', reason=_EXTRA)
pytest.importorskip('gymnasium_robotics', reason=_EXTRA)

from wmjax import envs  # pylint: disable=g-import-not-at-top

PUSH_STEPS = 25


def _wrap(a):
  return (a + np.pi) % (2 * np.pi) - np.pi


# --- PushT. ----------------------------------------------------------------------------


def _scripted_pushes(seed: int, num: int, speed: tuple[float, float]):
  """(start (5,) [agent xy, block xy, angle], actions (PUSH_STEPS, 2)) pairs: the pusher
  starts 90-130 px from a random point of a random T and pushes toward it with relative
  actions of magnitude `speed` plus noise (DINO-WM's relative mode: target = agent + 100 a)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num):
    block = rng.uniform(180, 330, 2)
    angle = rng.uniform(-np.pi, np.pi)
    if rng.random() < 0.5:  # A point on the crossbar or on the stem.
      local = np.array([rng.uniform(-50, 50), rng.uniform(5, 25)])
    else:
      local = np.array([rng.uniform(-10, 10), rng.uniform(30, 110)])
    c, s = np.cos(angle), np.sin(angle)
    aim = block + np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]])
    d = rng.normal(size=2)
    d /= np.linalg.norm(d)
    agent = aim - d * rng.uniform(90, 130)
    actions = (d * rng.uniform(*speed, size=(PUSH_STEPS, 1))
               + 0.05 * rng.normal(size=(PUSH_STEPS, 2)))
    out.append((np.array([*agent, *block, angle]), actions))
  return out


def _reference_state(env) -> np.ndarray:
  """gym-pusht's state as our (7,) vector: agent xy, block xy, angle in [-pi, pi), agent v."""
  a, b = env.agent, env.block
  return np.array([a.position.x, a.position.y, b.position.x, b.position.y, _wrap(b.angle),
                   a.velocity.x, a.velocity.y])


def _reference_push(env, start, actions) -> np.ndarray:
  """(PUSH_STEPS + 1, 7) reference states of one push."""
  env.reset(options={'reset_to_state': start})
  states = [_reference_state(env)]
  for a in actions:
    env.step(np.asarray(env.agent.position) + 100.0 * a)
    states.append(_reference_state(env))
  return np.array(states)


@functools.lru_cache(maxsize=None)
def _pusht():
  env = envs.load('pusht')

  @jax.jit
  def one_step(svs, actions):  # (N, 7), (N, 2) -> (N, 7)
    return jax.vmap(lambda sv, a: env.step(env.reset_to(sv), a).obs['state'])(svs, actions)

  @jax.jit
  def push(svs, actions):  # (N, 7), (N, T, 2) -> (N, T + 1, 7)
    def one(sv, acts):
      def body(s, a):
        s = env.step(s, a)
        return s, s.obs['state']
      state = env.reset_to(sv)
      return jnp.concatenate([sv[None], jax.lax.scan(body, state, acts)[1]])
    return jax.vmap(one)(svs, actions)

  return one_step, push


def _pusht_comparison(speed):
  ref_env = gym.make('gym_pusht/PushT-v0', obs_type='state').unwrapped
  pushes = _scripted_pushes(seed=0, num=16, speed=speed)
  ref = np.stack([_reference_push(ref_env, start, acts) for start, acts in pushes])
  actions = np.stack([acts for _, acts in pushes]).astype(np.float32)
  one_step, push = _pusht()
  # One step from each of the reference's states.
  n = ref.shape[0] * PUSH_STEPS
  ours = np.asarray(one_step(jnp.asarray(ref[:, :-1].reshape(n, 7), jnp.float32),
                             jnp.asarray(actions.reshape(n, 2))))
  before, after = ref[:, :-1].reshape(n, 7), ref[:, 1:].reshape(n, 7)
  moved = np.linalg.norm(after[:, 2:4] - before[:, 2:4], axis=-1)
  turned = np.abs(_wrap(after[:, 4] - before[:, 4]))
  contact = (moved > 0.5) | (turned > 0.005)
  pos_err = np.linalg.norm(ours[:, 2:4] - after[:, 2:4], axis=-1)[contact]
  ang_err = np.abs(_wrap(ours[:, 4] - after[:, 4]))[contact]
  # Whole pushes, each simulator on its own.
  whole = np.asarray(push(jnp.asarray(ref[:, 0], jnp.float32), jnp.asarray(actions)))
  turn = lambda s: _wrap(np.diff(s[..., 4], axis=-1)).sum(-1)
  return dict(contact_steps=int(contact.sum()), moved=moved[contact], turned=turned[contact],
              pos_err=pos_err, ang_err=ang_err, free_err=np.abs(
                  ours[~contact, :2] - after[~contact, :2]).max(initial=0.0),
              ref_turn=turn(ref), our_turn=turn(whole))


def _check_pusht(speed):
  r = _pusht_comparison(speed)
  assert r['contact_steps'] > 60, r['contact_steps']
  # The reference block really moves on these steps (so the errors below are meaningful).
  assert np.median(r['moved']) > 4.0 and np.median(r['turned']) > 0.03
  assert np.median(r['pos_err']) < 1.0, np.median(r['pos_err'])
  assert np.median(r['ang_err']) < 0.01, np.median(r['ang_err'])
  assert r['free_err'] < 1e-2, r['free_err']  # Pusher without contact: same PD control.
  ref_turn, our_turn = r['ref_turn'], r['our_turn']
  big = np.abs(ref_turn) > 0.1
  ratio = np.abs(our_turn[big]) / np.abs(ref_turn[big])
  assert big.sum() >= 8, ref_turn
  assert 0.75 < np.median(ratio) < 1.25, (ref_turn, our_turn)
  assert (np.sign(our_turn[big]) == np.sign(ref_turn[big])).mean() >= 0.9, (ref_turn, our_turn)


def test_pusht_gentle_pushes_match_gym_pusht():
  _check_pusht((0.1, 0.35))   # 10-35 px targets: the reference data's scale (action std 0.2).


def test_pusht_hard_pushes_match_gym_pusht():
  _check_pusht((0.4, 1.0))    # 40-100 px targets: faster than any data.


# --- PointMaze. ------------------------------------------------------------------------
# gymnasium-robotics centres the U-maze and puts x along the columns, y up the rows; D4RL
# (and we) use x along the rows and y along the columns, offset by the body at (1.2, 1.2).
# Ours -> reference: (x, y) -> (y - 1.8, 1.8 - x); velocities and actions (x, y) -> (y, -x).


def _to_reference(v):
  return np.stack([v[..., 1], -v[..., 0]], -1)


def _reference_pointmaze_rollout(qpos, qvel, actions):
  """(T + 1, 4) states of gymnasium-robotics' point model, D4RL's frame skip 5."""
  env = gym.make('PointMaze_UMaze-v3').unwrapped
  env.reset(seed=0)
  point = env.point_env
  point.set_state(np.array([qpos[1] - 1.8, 1.8 - qpos[0]]), _to_reference(qvel))
  out = [np.concatenate([point.data.qpos, point.data.qvel])]
  for a in actions:
    point._clip_velocity()  # pylint: disable=protected-access
    point.do_simulation(np.clip(_to_reference(a), -1.0, 1.0), 5)
    out.append(np.concatenate([point.data.qpos, point.data.qvel]))
  out = np.array(out)
  # Back to our frame.
  return np.concatenate([np.stack([1.8 - out[:, 1], out[:, 0] + 1.8], -1),
                         np.stack([-out[:, 3], out[:, 2]], -1)], -1)


def test_pointmaze_matches_gymnasium_robotics():
  env = envs.load('pointmaze')

  @jax.jit
  def rollout(sv, actions):
    def body(s, a):
      s = env.step(s, a)
      return s, env.state_vector(s)
    return jnp.concatenate([sv[None], jax.lax.scan(body, env.reset_to(sv), actions)[1]])

  cases = {
      # Constant force along the bottom corridor: accelerates to the +-5 velocity clip.
      'free': (np.array([2.8, 0.8, 0.0, 0.0]), np.tile([0.0, 0.3], (6, 1))),
      # Full force into the outer wall (x = 3.3 minus the 0.1 ball radius), then along it.
      'wall': (np.array([2.8, 1.8, 0.0, 0.0]),
               np.concatenate([np.tile([1.0, 0.0], (6, 1)), np.tile([0.5, -0.5], (6, 1))])),
      # Out of range forces are clipped, and a corner is met.
      'corner': (np.array([0.8, 0.8, 1.0, -1.0]), np.tile([-3.0, -2.0], (8, 1))),
  }
  for name, (sv, actions) in cases.items():
    ref = _reference_pointmaze_rollout(sv[:2], sv[2:], actions)
    ours = np.asarray(rollout(jnp.asarray(sv, jnp.float32), jnp.asarray(actions, jnp.float32)))
    assert np.abs(ref[:, :2] - ref[0, :2]).max() > 0.3, name  # It really moved.
    np.testing.assert_allclose(ours[:, :2], ref[:, :2], atol=0.02, err_msg=name)
    np.testing.assert_allclose(ours[:, 2:], ref[:, 2:], atol=0.2, err_msg=name)


if __name__ == '__main__':
  # `python tests/test_referee.py` prints the PushT measurements behind RESULTS.md.
  for speed in ((0.1, 0.35), (0.4, 1.0)):
    r = _pusht_comparison(speed)
    big = np.abs(r['ref_turn']) > 0.1
    print(f'pushes {speed}: contact steps {r["contact_steps"]}; reference moves median '
          f'{np.median(r["moved"]):.2f} px {np.median(r["turned"]):.3f} rad; block error median '
          f'(p90) {np.median(r["pos_err"]):.3f} ({np.percentile(r["pos_err"], 90):.2f}) px, '
          f'{np.median(r["ang_err"]):.4f} ({np.percentile(r["ang_err"], 90):.3f}) rad; '
          f'whole-push turn ours / reference median '
          f'{np.median(np.abs(r["our_turn"][big]) / np.abs(r["ref_turn"][big])):.3f}')
