"""What the planning stage writes: results tables, the distance plot, planned-vs-executed videos.

`summary_markdown` (summary.md) and `wilson_interval` (the success rate's 95% interval) read the
results dict of `plan.evaluate`; `write_plot` draws the distance to the goal over executed model
actions; `write_videos` renders GIFs of the first plan (as the world model's decoder imagined it,
or executed in the simulator) beside the executed episode (`wmjax.media`).
"""

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wmjax import io
from wmjax import media
from wmjax.envs import execution
from wmjax.envs import render as render_lib
from wmjax.planning import problems


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a success rate."""
  if n == 0:
    return (0.0, 1.0)
  phat = successes / n
  denom = 1 + z * z / n
  center = (phat + z * z / (2 * n)) / denom
  half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, center - half), min(1.0, center + half))


def _label(frames: np.ndarray, text: str, scale: int) -> np.ndarray:
  """Upscales (T, H, W, 3) uint8 frames by `scale` and writes `text` in a header strip."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  frames = np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)
  t, h, w, _ = frames.shape
  header = Image.new('RGB', (w, 14), (255, 255, 255))
  ImageDraw.Draw(header).text((2, 1), text, fill=(0, 0, 0))
  strip = np.broadcast_to(np.asarray(header)[None], (t, 14, w, 3))
  return np.concatenate([strip, frames], axis=1)


def write_videos(out_dir, config, env, model, params, stats, proto, init, goal, ep, count):
  """Planned-vs-executed GIFs of the first `count` instances (`proto`: the `PlanProtocol`);
  returns (paths, what the left panel shows)."""
  size = int(model.image_size) if model is not None else int(config.image_size)
  fs = int(config.frameskip)
  normalizer = execution.normalizer_from_stats(stats)
  render = jax.jit(jax.vmap(lambda s: render_lib.to_uint8(env.render(s, size))))
  decoded = model is not None and getattr(model, 'encoder_name', '') == 'conv'
  if decoded:
    planned_label = 'world-model decoder: the first plan as the model imagined it'

    @jax.jit
    def planned(params, state_vector, actions):
      obs = problems.pixel_observer(env, normalizer, size)(state_vector)
      z = model.rollout(params, model.encode(params, obs), actions, mode=proto.rollout)
      return render_lib.to_uint8(model.decode(params, z['visual']))
  else:
    planned_label = 'simulator: the first plan executed open loop'

    @jax.jit
    def planned(params, state_vector, actions):  # The plan executed like every plan.
      del params  # Unused.
      traj = execution.execute_plans(env, normalizer, state_vector[None], actions[None], fs)
      return render(traj['state'][0])

  scale = max(1, 128 // size)
  paths = []
  for i in range(count):
    left = np.asarray(planned(params, init[i], jnp.asarray(ep.plans[i, 0])))
    right = np.asarray(render(jnp.asarray(ep.states[i])))
    goal_img = np.asarray(render(jnp.asarray(goal[i])[None]))[0]
    right = np.concatenate([right, goal_img[None]], axis=0)  # Last frame: the goal.
    frames = media.side_by_side(_label(left, 'planned' + (' (decoder)' if decoded else
                                                          ' (simulator)'), scale),
                                _label(right, 'executed, then goal', scale))
    path = os.path.join(out_dir, 'videos', f'instance_{i:03d}.gif')
    with io.atomic_path(path) as tmp:
      media.save_video(tmp, frames, fps=4)
    paths.append(path)
  return paths, planned_label


def write_plot(path: str, distances: np.ndarray, success: np.ndarray, title: str) -> None:
  """Distance to the goal (N, T) over executed model actions, one line per instance."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  steps = np.arange(distances.shape[1])
  for d, s in zip(distances, success):
    ax.plot(steps, d, color='tab:green' if s else 'tab:red', alpha=0.5, lw=1)
  ax.plot(steps, distances.mean(axis=0), color='k', lw=2, label='mean')
  ax.set_xlabel('executed model actions')
  ax.set_ylabel('distance to goal')
  ax.set_title(title, fontsize=9)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def summary_markdown(r: dict[str, Any]) -> str:
  lo, hi = r['success_rate_ci95']
  b = r['budget']
  t = r['timing']
  return '\n'.join([
      f'# {r["task"]}: {r["protocol"]["settings"]}, {r["protocol"]["mode"]}, '
      f'model {r["protocol"]["model"]}',
      '',
      '| success | 95% CI (Wilson) | mean final distance | mean min distance | '
      's / episode (batched) | s / plan (batched) | compile s | budget |',
      '|---|---|---|---|---|---|---|---|',
      f'| {r["success_rate"]:.0%} ({r["num_success"]}/{r["num_instances"]}) | '
      f'{lo:.0%} - {hi:.0%} | {r["mean_final_distance"]:.4g} | {r["mean_min_distance"]:.4g} | '
      f'{t["seconds_per_episode"]:.3g} | {t["seconds_per_plan"]:.3g} | '
      f'{t["compile_seconds"]:.3g}{" (reused)" if t.get("program_reused") else ""} | '
      f'{b["num_replans"]} replans x {b["execute"]} executed = '
      f'{b["model_actions"]} model actions ({b["env_steps"]} env steps) |',
      '',
      f'Objective `{r["protocol"]["objective"]}` (alpha {r["protocol"]["alpha"]:g}), rollout '
      f'`{r["protocol"]["rollout"]}`, horizon {r["protocol"]["horizon"]}, '
      f'{"bounded" if r["protocol"]["bounded"] else "unbounded"} actions; '
      f'{r["num_instances"]} instances (seed {r["seed"]}), all episodes batched in one call on '
      f'{r["machine"]["device_count"]} x {r["machine"]["device_kind"]} '
      f'(jax {r["machine"]["jax"]}, matmul precision '
      f'{r["machine"]["jax_default_matmul_precision"]}).',
      '',
      f'Non-finite costs or gradients guarded by the planner: {r.get("num_nonfinite", 0)}; '
      f'plans without a finite cost: {r.get("num_nonfinite_plans", 0)}/'
      f'{r.get("num_plans", "?")}.',
      '',
      f'Host work around the compiled call: loading {t["load_seconds"]:.3g} s, sampling the '
      f'problems {t["problems_seconds"]:.3g} s, outputs {t["outputs_seconds"]:.3g} s.',
      '',
  ] + first_plan_lines(r['instances']))


def first_plan_lines(instances: list[dict[str, Any]]) -> list[str]:
  """The predicted vs realized cost of the first plans, for rows planned through a model."""
  pairs = np.asarray([(i['first_plan_cost'], i['first_plan_realized_cost']) for i in instances
                      if i.get('first_plan_realized_cost') is not None], np.float64)
  pairs = pairs[np.all(np.isfinite(pairs), axis=1)] if len(pairs) else pairs
  if not len(pairs):
    return []
  predicted, realized = np.median(pairs, axis=0)
  above = int(np.sum(pairs[:, 1] > pairs[:, 0]))
  return [f'First plans, from the true start: cost predicted through the model, median '
          f'{predicted:.3g}; realized (the plan executed in the simulator, scored with the same '
          f'objective and encoder), median {realized:.3g}; realized above predicted on '
          f'{above}/{len(pairs)}.', '']
