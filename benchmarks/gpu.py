r"""Paper-scale single-GPU timings: CEM and Adam-GBP plans and one predictor training step.

At DINO-WM sizes (PAPER.md sections 2, 3, 7: 196 tokens x 404 features = 384 visual + 10 proprio +
10 action, depth 6, 16 heads x 64, MLP 2048, num_hist 3; the PushT paper config) with random
weights, starting from latents (the frozen encoder is not run), it times the library's own code:

  forward  one predictor call on --forward_batch windows of num_hist frames (the work of one CEM
           rollout step)
  cem      one CEM plan (wmjax.planning.cem, 300 samples x 30 iterations, top 30), horizon 5,
           history rollout, objective `last`, one instance
  adam     one Adam-GBP plan (wmjax.planning.gradient_planner, Adam lr 0.2 x 100 steps), horizon 5,
           one-frame (markov) rollout, objective `all`, for 1 and for 50 vmapped instances
  train    one predictor training step (wmjax.training.make_train_step with the config's AdamW):
           32 windows of num_hist + 1 latent frames, teacher forcing, dropout on

Each row: compile seconds (`jit(...).lower(...).compile()`; with the persistent compilation cache
on, a cache hit counts), the median of --repeats steady-state runs after one warm-up run (each
ended by `block_until_ready`), FLOPs, achieved TFLOP/s and its fraction of the card's dense peak
for the compute dtype, and the targets: CEM 300 x 30 <= 2 s, Adam x 100 <= 0.15 s for 1 instance and
<= 1.2 s for 50.

FLOPs come from XLA's cost analysis (`.cost_analysis()['flops']`), but XLA counts the body of a
while loop ONCE, not times its trip count, so the whole-program figure of a scanned planner
(column `xla_program_flops`, kept for reference) is 1-3 orders of magnitude too low. Each row's
FLOPs are therefore the cost analysis of its loop-free unit times the number of units it runs:
  forward, train: the call itself;
  cem:  iterations x the population's rollout;
  adam: steps x (the rollout's forward + backward w.r.t. its inputs) + one forward;
  a rollout: one predictor call on its window per step, except the growing steps of a history
        rollout (one new frame each, earlier frames' keys and values cached), counted as the
        loop-free program they are (`rollout_flops`).
Units are counted on the XLA-attention program (`Lowered.cost_analysis`, no compile), since XLA
cannot see inside the cuDNN attention custom call: every --attention choice gets the same count,
that of the masked form (all T x T frame blocks of logits; the 'prefix' form that cuDNN runs
computes T (T + 1) / 2 of them, see wmjax/models/attention.py).
A row that fails (e.g. a fused kernel the card or jax version lacks) is recorded with its error
and the other rows still run; the exit status is then non-zero.

  python benchmarks/gpu.py                                     # float32, attention auto
  python benchmarks/gpu.py --dtype bfloat16 --pad_width_to 128 --json_out /tmp/gpu.json
  python benchmarks/gpu.py --dtype bfloat16 --attention cudnn --attention_method mask --rows forward
  python benchmarks/gpu.py --sizes tiny                        # seconds on a CPU (tests)
  python benchmarks/gpu.py --flops_only                        # FLOP counts only, nothing runs
"""

import dataclasses
import json
import math
import os
import statistics
import time
import types
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.configs import pusht as pusht_config
from wmjax import machine as machine_lib
from wmjax import planning
from wmjax import training
from wmjax.models import attention as attention_lib
from wmjax.models import predictor as predictor_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROWS = ('forward', 'cem', 'adam', 'train')
SIZES = ('paper', 'tiny')

# PushT sizes (proprio P = 4, raw actions A = 2, state S = 7); the paper's tasks share the model.
_PUSHT_ENV = types.SimpleNamespace(state_size=7, proprio_size=4, action_size=2)

# Per size: the PushT config variant whose model/plan/train sections are used, overrides of its
# model section, the instance counts of the Adam row, and the batch sizes of forward and train.
_SIZE_SETTINGS = {
    'paper': dict(variant='paper', image_size=None, model={}, adam_instances=(1, 50),
                  forward_batch=300, train_batch=32),
    # 16 tokens (16 px, two stride-2 stages) x (12 + 20) features, one small block.
    'tiny': dict(variant='test', image_size=16,
                 model=dict(encoder='conv', conv=dict(channels=(8, 8), token_dim=12)),
                 adam_instances=(1, 3), forward_batch=16, train_batch=4),
}

# Targets at paper sizes on one H100/H200 (seconds per plan): (row, instances) -> seconds.
TARGETS = {('cem', 1): 2.0, ('adam', 1): 0.15, ('adam', 50): 1.2}

# Dense (no sparsity) peak TFLOP/s per GPU and matmul input precision, from NVIDIA's data sheets.
PEAK_TFLOPS = {
    'H100 SXM': {'bfloat16': 989.4, 'tf32': 494.7, 'float32': 66.9},
    'H100 PCIe': {'bfloat16': 756.0, 'tf32': 378.0, 'float32': 51.2},
    'H200': {'bfloat16': 989.4, 'tf32': 494.7, 'float32': 66.9},
    'A100': {'bfloat16': 312.0, 'tf32': 156.0, 'float32': 19.5},
}


def card_name(device_kind: str) -> str | None:
  """PEAK_TFLOPS key of a jax device_kind (e.g. 'NVIDIA H100 80GB HBM3'), None when unknown."""
  k = device_kind.upper()
  if 'H200' in k:
    return 'H200'
  if 'H100' in k:
    if 'PCIE' in k:
      return 'H100 PCIe'
    if 'SXM' in k or 'HBM3' in k:
      return 'H100 SXM'
    return None
  if 'A100' in k:
    return 'A100'
  return None


def matmul_precision(dtype: str, default_precision: Any, backend: str = 'gpu') -> str:
  """Input precision of the predictor's matmuls: bfloat16 | tf32 | float32.

  float32 matmuls run as TF32 on these GPUs unless jax_default_matmul_precision asks for more.
  """
  if dtype == 'bfloat16':
    return 'bfloat16'
  if backend not in ('gpu', 'cuda'):
    return 'float32'
  p = str(default_precision).lower()
  if p in ('highest', 'float32', 'precision.highest'):
    return 'float32'
  if p == 'bfloat16':
    return 'bfloat16'
  return 'tf32'


def peak_tflops(device_kind: str, precision: str) -> float | None:
  card = card_name(device_kind)
  return None if card is None else PEAK_TFLOPS[card].get(precision)


def xla_flops(stage: Any) -> float | None:
  """`stage.cost_analysis()['flops']` of a jax Lowered or Compiled; None when unavailable.

  Handles the dict and list-of-dicts forms jax versions return, and missing or negative values.
  """
  try:
    ca = stage.cost_analysis()
  except (NotImplementedError, RuntimeError, AttributeError, TypeError, ValueError):
    return None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  if not ca or not hasattr(ca, 'get'):
    return None
  f = ca.get('flops')
  if f is None:
    return None
  f = float(f)
  return f if math.isfinite(f) and f >= 0 else None


def unit_flops(fn: Callable, *args) -> float | None:
  """FLOPs of a loop-free `fn(*args)` from the cost analysis of its lowering (compiled if needed)."""
  lowered = jax.jit(fn).lower(*args)
  f = xla_flops(lowered)
  return f if f is not None else xla_flops(lowered.compile())


def _define_flags() -> types.SimpleNamespace:
  """The command-line flags (defined only when run as a script, so that importing this module
  next to other benchmarks defines no duplicate flag)."""
  return types.SimpleNamespace(
      dtype=flags.DEFINE_enum('dtype', 'float32', predictor_lib.DTYPES,
                              'Predictor compute dtype.'),
      attention=flags.DEFINE_enum(
          'attention', 'auto', ['auto', 'xla', 'cudnn'],
          'Attention implementation (auto: cuDNN on a GPU in bfloat16, else XLA).'),
      attention_method=flags.DEFINE_enum(
          'attention_method', 'default', ['default', 'mask', 'prefix'],
          "Frame-causal attention form (wmjax/models/attention.py; default: 'prefix' for cuDNN, "
          "else 'mask'). cuDNN with 'mask' fails inside vmap (the cem and adam rows)."),
      pad_width_to=flags.DEFINE_integer(
          'pad_width_to', 0, 'Round the block width up to a multiple (0: off; 128: 404 -> 512).'),
      sizes=flags.DEFINE_enum('sizes', 'paper', SIZES,
                              'paper: DINO-WM sizes and budgets; tiny: seconds on a CPU.'),
      rows=flags.DEFINE_list('rows', list(ROWS), f'Rows to time, among {ROWS}.'),
      repeats=flags.DEFINE_integer('repeats', 3, 'Timed runs per row (after one warm-up run).'),
      json_out=flags.DEFINE_string('json_out', None,
                                   'Write machine info and every row as JSON here.'),
      flops_only=flags.DEFINE_bool('flops_only', False,
                                   'Count FLOPs only (lowering, no compile or run).'),
      compilation_cache_dir=flags.DEFINE_string(
          'compilation_cache_dir', os.path.join(_ROOT, '.jax_cache'),
          "Persistent XLA compilation cache ('' disables; compile times then include cache "
          'hits).'))


# ------------------------------------------------------------------------------------- setup
def build(sizes: str, dtype: str, attention: str, pad_width_to: int,
          attention_method: str | None = None):
  """(config, model, params): the PushT config of `sizes` and a random world model from latents.

  attention_method: None (the predictor's default for the implementation) | 'mask' | 'prefix'.
  """
  if sizes not in SIZES:
    raise ValueError(f'Unknown sizes {sizes!r}; choose one of {SIZES}.')
  s = _SIZE_SETTINGS[sizes]
  config = pusht_config.get_config(s['variant'])
  config.model.update_from_flattened_dict(_flatten(s['model']))
  if s['image_size']:
    config.image_size = s['image_size']
  config.model.predictor.dtype = dtype
  config.model.predictor.attention_impl = attention
  config.model.predictor.pad_width_to = pad_width_to
  kwargs = training.world_model_kwargs(config, _PUSHT_ENV)
  model = training.build_world_model(kwargs)
  if attention_method is not None:
    model = dataclasses.replace(
        model, predictor=model.predictor.clone(attention_method=attention_method))
  return config, model, init_params(model, jax.random.key(config.seed))


def _flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def init_params(model, key: jax.Array) -> dict[str, Any]:
  """Random world-model params without the encoder's ({} in its place): planning and training
  from latents never run it."""
  s = model.latent_spec
  k_prop, k_act, k_pred = jax.random.split(key, 3)

  @jax.jit
  def init(k_prop, k_act, k_pred):
    tokens = jnp.zeros((model.num_hist, s.num_tokens, s.token_dim), jnp.float32)
    return {'encoder': {},
            'proprio_encoder': model.proprio_encoder.init(
                k_prop, jnp.zeros((model.proprio_dim,)))['params'],
            'action_encoder': model.action_encoder.init(
                k_act, jnp.zeros((model.action_dim,)))['params'],
            'predictor': model.predictor.init(k_pred, tokens)['params']}

  return init(k_prop, k_act, k_pred)


def with_xla_attention(model):
  """The same model with masked XLA attention (for FLOP counting)."""
  return dataclasses.replace(
      model, predictor=model.predictor.clone(attention_impl='xla', attention_method='mask'))


def random_latents(model, key: jax.Array, lead: tuple[int, ...]) -> dict[str, jax.Array]:
  s = model.latent_spec
  kv, kp = jax.random.split(key)
  return {'visual': jax.random.normal(kv, lead + (s.num_tokens, s.visual_dim)),
          'proprio': jax.random.normal(kp, lead + (s.proprio_emb_dim,))}


def rollout_flops(model, params, n: int, h: int, rollout: str, backward: bool = False):
  """FLOPs of n rollouts of h steps on the XLA-attention program, forward or forward + backward
  w.r.t. the latents and actions: a one-frame rollout's steps and a history rollout's sliding
  steps (`predict_next`) as predictor calls on their window (XLA counts a scan body once), a
  history rollout's growing steps (the first min(num_hist, h), unrolled) as their own program."""
  xla, k = with_xla_attention(model), model.num_hist

  def cost(fn, z, a):
    if backward:
      total = lambda p, z, a: sum(jnp.sum(x) for x in jax.tree.leaves(fn(p, z, a)))
      return unit_flops(lambda p, z, a: jax.value_and_grad(total, argnums=(1, 2))(p, z, a),
                        params, z, a)
    return unit_flops(fn, params, z, a)

  grow = min(k, h) if rollout == 'history' else 0
  window = k if rollout == 'history' else 1
  costs = []
  if h > grow:
    step = cost(lambda p, z, a: xla.predict_next(p, z, a),
                random_latents(model, jax.random.key(6), (n, window)),
                jnp.zeros((n, window, model.action_dim)))
    costs.append(None if step is None else (h - grow) * step)
  if grow:
    costs.append(cost(
        lambda p, z, a: jax.vmap(lambda z, a: xla.rollout(p, z, a, mode='history'))(z, a),
        random_latents(model, jax.random.key(6), (n,)), jnp.zeros((n, grow, model.action_dim))))
  return None if None in costs else sum(costs)


# ------------------------------------------------------------------------------------- rows
def forward_row(model, params, batch: int) -> dict[str, Any]:
  k = model.num_hist
  z = random_latents(model, jax.random.key(1), (batch, k))
  actions = jax.random.normal(jax.random.key(2), (batch, k, model.action_dim))
  fn = lambda params, z, a: model.predict(params, z, a)
  xla = with_xla_attention(model)
  return dict(name='forward', instances=batch,
              settings=f'predictor forward, {batch} x {k} frames',
              fn=fn, args=(params, z, actions),
              count=lambda: unit_flops(lambda p, z, a: xla.predict(p, z, a), params, z, actions))


def _plan_batch(model, planner, params, z0, zg, keys, objective, rollout, alpha, base, horizon):
  """jax.vmap over instances of one plan from encoded start and goal latents."""

  def one(z0, zg, key):
    cost = planning.world_model_cost(model, params, z0, zg, mode=objective, alpha=alpha,
                                     base=base, rollout=rollout, horizon=horizon,
                                     action_size=model.action_dim)
    k_init, k_plan = jax.random.split(key)
    actions, _, info = planner.plan(cost, planner.init(k_init), k_plan)
    return actions, info['cost']

  return jax.vmap(one)(z0, zg, keys)


def _problems(model, instances: int):
  z0 = random_latents(model, jax.random.key(3), (instances,))
  zg = random_latents(model, jax.random.key(4), (instances,))
  return z0, zg, jax.random.split(jax.random.key(5), instances)


def cem_row(model, params, plan_cfg) -> dict[str, Any]:
  c, h = plan_cfg.cem, int(plan_cfg.horizon)
  planner = planning.cem(h, model.action_dim, num_samples=c.num_samples,
                         num_elites=c.num_elites, num_iterations=c.num_iterations,
                         init_std=c.init_std)
  z0, zg, keys = _problems(model, 1)
  fn = lambda params, z0, zg, keys: _plan_batch(
      model, planner, params, z0, zg, keys, c.objective, c.rollout, plan_cfg.alpha,
      plan_cfg.objective_base, h)

  def count():
    unit = rollout_flops(model, params, c.num_samples, h, c.rollout)
    return None if unit is None else c.num_iterations * unit

  return dict(name='cem', instances=1,
              settings=(f'CEM {c.num_samples} x {c.num_iterations} (top {c.num_elites}), H={h}, '
                        f'{c.rollout}, {c.objective}'),
              fn=fn, args=(params, z0, zg, keys), count=count)


def adam_row(model, params, plan_cfg, instances: int) -> dict[str, Any]:
  c, h = plan_cfg.adam, int(plan_cfg.horizon)
  planner = planning.gradient_planner(h, model.action_dim, optax.adam(c.lr), c.num_steps,
                                      noise_std=c.noise_std, init_std=c.init_std)
  z0, zg, keys = _problems(model, instances)
  fn = lambda params, z0, zg, keys: _plan_batch(
      model, planner, params, z0, zg, keys, c.objective, c.rollout, plan_cfg.alpha,
      plan_cfg.objective_base, h)

  def count():
    f = rollout_flops(model, params, instances, h, c.rollout)
    fb = rollout_flops(model, params, instances, h, c.rollout, backward=True)
    return None if f is None or fb is None else c.num_steps * fb + f

  return dict(name='adam', instances=instances,
              settings=f'Adam lr {c.lr:g} x {c.num_steps}, H={h}, {c.rollout}, {c.objective}',
              fn=fn, args=(params, z0, zg, keys), count=count)


def train_row(model, params, config, batch: int) -> dict[str, Any]:
  k, s = model.num_hist, model.latent_spec
  optimizer = training.make_optimizer(config.train)
  # A copy: the step donates its state, and the other rows keep using `params`.
  state = training.create_train_state(jax.tree.map(jnp.copy, params), optimizer)
  kv, kp, ka = jax.random.split(jax.random.key(7), 3)
  data = {'visual': jax.random.normal(kv, (batch, k + 1, s.num_tokens, s.visual_dim)),
          'proprio': jax.random.normal(kp, (batch, k + 1, model.proprio_dim)),
          'actions': jax.random.normal(ka, (batch, k, model.action_dim))}

  def make_step(model):
    def loss_fn(params, frozen, batch, key):
      # The teacher-forcing loss of wmjax.training with the frozen encoder's output given.
      full = {**params, **frozen}
      prop = model.encode_proprio(full, batch['proprio'])
      inputs = training.PredictorInputs(visual=batch['visual'][:, :-1], proprio=prop[:, :-1],
                                        actions=model.embed_actions(full, batch['actions']))
      targets = training.Targets(visual=batch['visual'][:, 1:],
                                 proprio=jax.lax.stop_gradient(prop[:, 1:]))
      return training.predict_loss(model, full, inputs, targets, key)
    return training.make_train_step(loss_fn, optimizer)

  xla_step = make_step(with_xla_attention(model))
  return dict(name='train', instances=batch,
              settings=f'train step, {batch} windows x {k}+1 frames, AdamW',
              fn=make_step(model), args=(state, data, jax.random.key(8)), donate=(0,),
              next_args=lambda args, out: (out[0],) + tuple(args[1:]),
              count=lambda: unit_flops(xla_step, state, data, jax.random.key(8)))


def time_row(row: dict[str, Any], repeats: int) -> dict[str, Any]:
  """Compiles and times one row: compile seconds, one warm-up run, `repeats` timed runs."""
  args = row['args']
  t0 = time.perf_counter()
  compiled = jax.jit(row['fn'], donate_argnums=row.get('donate', ())).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  next_args = row.get('next_args', lambda args, out: args)
  times = []
  for i in range(repeats + 1):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    if i:  # The first run is a warm-up.
      times.append(time.perf_counter() - t0)
    args = next_args(args, out)
  return {'compile_s': compile_s, 'times_s': times, 'median_s': statistics.median(times),
          'xla_program_flops': xla_flops(compiled)}


def run(sizes: str = 'paper', dtype: str = 'float32', attention: str = 'auto',
        pad_width_to: int = 0, rows: tuple[str, ...] = ROWS, repeats: int = 3,
        flops_only: bool = False, attention_method: str | None = None) -> dict[str, Any]:
  """Builds the model, times (or only counts) every row, prints a table; returns the results."""
  unknown = sorted(set(rows) - set(ROWS))
  if unknown:
    raise ValueError(f'Unknown rows {unknown}; choose among {ROWS}.')
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1; got {repeats}.')
  info = machine_lib.machine_info()
  for line in machine_lib.describe(info):
    print(line)
  config, model, params = build(sizes, dtype, attention, pad_width_to, attention_method)
  s, p = model.latent_spec, model.predictor
  impl = predictor_lib.resolve_attention_impl(p.attention_impl, p.dtype, p.head_dim)
  method = p.attention_method or attention_lib.default_method(impl)
  width = predictor_lib.block_width(s.token_dim, p.width, p.pad_width_to)
  num_params = int(sum(np.size(x) for x in jax.tree.leaves(params['predictor'])))
  precision = matmul_precision(dtype, info['jax_default_matmul_precision'], info['backend'])
  peak = peak_tflops(info['device_kind'], precision)
  description = {
      'sizes': sizes, 'tokens': s.num_tokens, 'token_dim': s.token_dim, 'block_width': width,
      'depth': p.depth, 'heads': p.num_heads, 'head_dim': p.head_dim, 'mlp_dim': p.mlp_dim,
      'num_hist': model.num_hist, 'dtype': dtype, 'attention': attention,
      'attention_resolved': impl or 'default (xla)', 'attention_method': method,
      'pad_width_to': pad_width_to,
      'predictor_params': num_params, 'matmul_precision': precision, 'peak_tflops': peak,
      'card': card_name(info['device_kind'])}
  print(f'model: {s.num_tokens} tokens x {s.token_dim} (blocks at width {width}), depth '
        f'{p.depth}, {p.num_heads} heads x {p.head_dim}, MLP {p.mlp_dim}, num_hist '
        f'{model.num_hist}, {num_params / 1e6:.2f}M predictor parameters; dtype {dtype}, '
        f'attention {attention} -> {description["attention_resolved"]} ({method})')
  print(f'peak: {description["card"] or "unknown card"}, {precision} matmuls: '
        f'{"n/a" if peak is None else f"{peak:g} TFLOP/s dense"}; median of {repeats} runs '
        'after one warm-up', flush=True)

  specs = []
  for name in rows:
    if name == 'forward':
      specs.append(forward_row(model, params, _SIZE_SETTINGS[sizes]['forward_batch']))
    elif name == 'cem':
      specs.append(cem_row(model, params, config.plan))
    elif name == 'adam':
      specs += [adam_row(model, params, config.plan, n)
                for n in _SIZE_SETTINGS[sizes]['adam_instances']]
    else:
      specs.append(train_row(model, params, config, _SIZE_SETTINGS[sizes]['train_batch']))

  out_rows = []
  for spec in specs:
    r = {'name': spec['name'], 'instances': spec['instances'], 'settings': spec['settings']}
    try:  # One failing row (e.g. a kernel the card lacks) is recorded; the others still run.
      r['flops'] = spec['count']()
      if not flops_only:
        r.update(time_row(spec, repeats))
        r['tflops'] = (None if r['flops'] is None or r['median_s'] <= 0
                       else r['flops'] / r['median_s'] / 1e12)
        r['fraction_of_peak'] = (None if r['tflops'] is None or peak is None
                                 else r['tflops'] / peak)
    except Exception as e:  # pylint: disable=broad-except
      r.setdefault('flops', None)
      r['error'] = f'{type(e).__name__}: {e}'[:2000]
      print(f'  {spec["settings"]} x{spec["instances"]}: FAILED {r["error"][:300]}', flush=True)
    target = TARGETS.get((spec['name'], spec['instances'])) if sizes == 'paper' else None
    r['target_s'] = target
    r['meets_target'] = (None if target is None or 'median_s' not in r
                         else bool(r['median_s'] <= target))
    if 'error' not in r:
      print('  ' + _row_line(r), flush=True)
    out_rows.append(r)
  print()
  print(table(out_rows))
  return {'machine': info, 'model': description, 'repeats': repeats, 'flops_only': flops_only,
          'rows': out_rows}


def _fmt(x: float | None, spec: str = '.3g') -> str:
  return 'n/a' if x is None else format(x, spec)


def _row_line(r: dict[str, Any]) -> str:
  text = f'{r["settings"]:<44} x{r["instances"]:<4} {_fmt(r["flops"] and r["flops"] / 1e9)} GFLOP'
  if 'median_s' in r:
    text += (f', {r["median_s"]:.4g} s (compile {r["compile_s"]:.3g} s), '
             f'{_fmt(r["tflops"])} TFLOP/s')
  return text


def table(rows: list[dict[str, Any]]) -> str:
  lines = ['| row | settings | instances | compile s | median s | GFLOP | TFLOP/s | '
           '% of peak | target s |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    frac = r.get('fraction_of_peak')
    target = ('-' if r['target_s'] is None else
              f'{r["target_s"]:g}' + ('' if r['meets_target'] is None else
                                      (' (met)' if r['meets_target'] else ' (missed)')))
    if 'error' in r:
      lines.append(f'| {r["name"]} | {r["settings"]} | {r["instances"]} | FAILED: '
                   f'{r["error"].splitlines()[0][:80]} | | | | | |')
      continue
    lines.append(
        f'| {r["name"]} | {r["settings"]} | {r["instances"]} | {_fmt(r.get("compile_s"))} | '
        f'{_fmt(r.get("median_s"), ".4g")} | {_fmt(r["flops"] and r["flops"] / 1e9, ".4g")} | '
        f'{_fmt(r.get("tflops"))} | {_fmt(frac and 100 * frac, ".3g")} | {target} |')
  return '\n'.join(lines)


def main(argv, f: types.SimpleNamespace):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if f.compilation_cache_dir.value:
    jax.config.update('jax_compilation_cache_dir', f.compilation_cache_dir.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  method = None if f.attention_method.value == 'default' else f.attention_method.value
  result = run(f.sizes.value, f.dtype.value, f.attention.value, f.pad_width_to.value,
               tuple(f.rows.value), f.repeats.value, f.flops_only.value, method)
  result['compilation_cache_dir'] = f.compilation_cache_dir.value or None
  if f.json_out.value:
    path = os.path.abspath(f.json_out.value)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as out:
      json.dump(result, out, indent=1)
    print(f'wrote {path}')
  failed = [f'{r["name"]} x{r["instances"]}' for r in result['rows'] if 'error' in r]
  if failed:
    raise SystemExit(f'rows failed: {", ".join(failed)} (errors in the output above)')


if __name__ == '__main__':
  _FLAGS = _define_flags()
  app.run(lambda argv: main(argv, _FLAGS))
