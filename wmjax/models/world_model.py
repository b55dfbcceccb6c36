"""The DINO-WM style latent world model as a static struct of pure functions (paper section 2).

`WorldModel` holds only static configuration and Linen modules (frozen and hashable: safe to close
over in `jax.jit`); all arrays live in an explicit params pytree with top-level keys
  'encoder'          frozen observation encoder (training leaves it out by convention; `encode`
                     also stops its gradient);
  'proprio_encoder'  linear map proprio (P,) -> (10,);
  'action_encoder'   linear map model action (frameskip*A,) -> (10,);
  'predictor'        frame-causal ViT.

A latent is a dict {'visual': (..., N, Dv), 'proprio': (..., 10)} (the proprio *embedding*).
Predictor tokens per frame are [visual | proprio emb tiled on every patch | action emb tiled], (N, Dv+20).
The predicted proprio embedding is the predictor's proprio channels averaged over the N patches (the
model writes N copies of it; the mean uses them all and is invariant to patch order).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wmjax.models import dinov2_convert
from wmjax.models import encoders as encoders_lib
from wmjax.models import predictor as predictor_lib

Latent = dict[str, jax.Array]
ROLLOUT_MODES = ('markov', 'history')
PARAM_KEYS = ('encoder', 'proprio_encoder', 'action_encoder', 'predictor')


def default_config() -> ml_collections.ConfigDict:
  """Every world-model field with its default (the paper's sizes for the predictor)."""
  c = ml_collections.ConfigDict()
  c.encoder = 'conv'         # identity | conv | dinov2_vits14 (see wmjax.models.encoders.ENCODERS).
  c.image_size = 64          # Side of obs['pixels'] (paper: 224; DINOv2 resizes it to 196).
  c.state_dim = 0            # S, size of obs['state'] (needed by the identity encoder only).
  c.proprio_dim = 0          # P, size of obs['proprio'] (task: pusht 4, pointmaze 4, wall 2).
  c.action_dim = 10          # Model action size frameskip * A (paper: 5 * 2).
  c.proprio_emb_dim = 10     # Linear proprio embedding (section 2: 10).
  c.action_emb_dim = 10      # Linear action embedding (section 2: 10).
  c.num_hist = 3             # History frames (section 2: 3 PushT/PointMaze, 1 Wall).
  c.conv = ml_collections.ConfigDict()
  c.conv.channels = (32, 64, 128)  # One stride-2 stage each: 64 px -> 8 x 8 tokens.
  c.conv.token_dim = 64            # Dv of the conv encoder.
  c.conv.normalize_tokens = True   # LayerNorm (no affine) on each token.
  c.dinov2 = ml_collections.ConfigDict()
  c.dinov2.weights = ''            # Local .pth / .safetensors loaded at init ('' = random init).
  c.dinov2.resize_to = 196         # On-device resize before patching (section 2: 224 -> 196).
  c.dinov2.patch_size = 14
  c.dinov2.dim = 384
  c.dinov2.depth = 12
  c.dinov2.num_heads = 6
  c.dinov2.mlp_dim = 1536
  c.dinov2.pos_grid = 37           # Positional-embedding grid of the checkpoint (518 / 14).
  c.dinov2.interpolate_offset = 0.1
  c.dinov2.dtype = 'float32'
  c.predictor = ml_collections.ConfigDict()
  c.predictor.depth = 6            # Section 2: 6.
  c.predictor.num_heads = 16       # Section 2: 16.
  c.predictor.head_dim = 64        # Section 2: 64 (inner 1024).
  c.predictor.mlp_dim = 2048       # Section 2: 2048.
  c.predictor.dropout = 0.1        # Section 2: 0.1.
  c.predictor.width = ml_collections.config_dict.placeholder(int)  # None = token dim (404).
  c.predictor.pad_width_to = 0     # 0 = off; else round the block width up to a multiple (128:
                                   # 404 -> 512 through proj_in/proj_out; section 7).
  c.predictor.attention_impl = ml_collections.config_dict.placeholder(str)
                                   # None | 'xla' | 'cudnn' | 'auto' (cudnn on a GPU in bfloat16).
  c.predictor.dtype = 'float32'    # float32 | bfloat16 computation.
  return c


class LatentSpec(NamedTuple):
  """Static latent sizes of one frame."""
  num_tokens: int        # N
  visual_dim: int        # Dv
  proprio_emb_dim: int   # 10
  action_emb_dim: int    # 10
  action_dim: int        # frameskip * A
  token_dim: int         # Dv + proprio_emb_dim + action_emb_dim


def _merge(base: dict, update: Mapping, path: str = '') -> dict:
  out = dict(base)
  for k, v in update.items():
    if k not in base:
      raise ValueError(f'Unknown world-model config field {path + k!r}; valid fields at this '
                       f'level: {sorted(base)}.')
    if isinstance(base[k], dict):
      if not isinstance(v, Mapping):
        raise ValueError(f'World-model config field {path + k!r} must be a mapping; got {v!r}.')
      out[k] = _merge(base[k], v, path + k + '.')
    else:
      out[k] = v
  return out


def _to_dict(config) -> dict:
  if config is None:
    return {}
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  return {k: _to_dict(v) if isinstance(v, (Mapping, ml_collections.ConfigDict)) else v
          for k, v in dict(config).items()}


def make_world_model(config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
                     **overrides) -> 'WorldModel':
  """Builds a WorldModel from `default_config()` updated by `config` then by `overrides`.

  Example: `make_world_model(cfg.model, image_size=cfg.image_size, proprio_dim=env.proprio_size,
  action_dim=cfg.frameskip * env.action_size)`; nested overrides are mappings
  (`predictor=dict(depth=2)`). Unknown fields raise ValueError.
  """
  c = _merge(default_config().to_dict(), _to_dict(config))
  c = _merge(c, _to_dict(overrides))
  name = c['encoder']
  if name not in encoders_lib.ENCODERS:
    raise ValueError(f'Unknown encoder {name!r}; choose one of {sorted(encoders_lib.ENCODERS)}.')
  weights = ''
  if name == 'conv':
    encoder = encoders_lib.make_encoder(name, dict(c['conv'], image_size=c['image_size']))
  elif name == 'dinov2_vits14':
    enc_cfg = dict(c['dinov2'], image_size=c['image_size'])
    weights = enc_cfg.pop('weights') or ''
    encoder = encoders_lib.make_encoder(name, enc_cfg)
  else:
    encoder = encoders_lib.make_encoder(name)
  for field in ('proprio_dim', 'action_dim', 'num_hist', 'proprio_emb_dim', 'action_emb_dim'):
    if int(c[field]) < 1:
      raise ValueError(f'World-model config {field} must be >= 1; got {c[field]}.')
  if encoder.obs_key == 'state' and int(c['state_dim']) < 1:
    raise ValueError(f'Encoder {name!r} reads obs["state"]: set state_dim >= 1 (got '
                     f'{c["state_dim"]}).')
  p = dict(c['predictor'])
  p['dtype'] = predictor_lib.check_options(p['attention_impl'], p['dtype'], p['width'],
                                           p['pad_width_to'])
  return WorldModel(
      encoder_name=name, image_size=int(c['image_size']), state_dim=int(c['state_dim']),
      proprio_dim=int(c['proprio_dim']), action_dim=int(c['action_dim']),
      proprio_emb_dim=int(c['proprio_emb_dim']), action_emb_dim=int(c['action_emb_dim']),
      num_hist=int(c['num_hist']), encoder_weights=weights, encoder=encoder,
      proprio_encoder=nn.Dense(int(c['proprio_emb_dim'])),
      action_encoder=nn.Dense(int(c['action_emb_dim'])),
      predictor=predictor_lib.Predictor(num_frames=int(c['num_hist']), **p))


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


@dataclasses.dataclass(frozen=True)
class WorldModel:
  """Static configuration + Linen modules; every method is a pure function of its arguments."""

  encoder_name: str
  image_size: int
  state_dim: int
  proprio_dim: int
  action_dim: int
  proprio_emb_dim: int
  action_emb_dim: int
  num_hist: int
  encoder_weights: str
  encoder: nn.Module
  proprio_encoder: nn.Module
  action_encoder: nn.Module
  predictor: nn.Module

  # ---------------------------------------------------------------- static information
  @property
  def obs_key(self) -> str:
    """The obs entry the encoder reads ('pixels' or 'state')."""
    return self.encoder.obs_key

  @property
  def obs_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of the obs entries one frame needs: the encoder's key and 'proprio'."""
    if self.obs_key == 'pixels':
      enc = jax.ShapeDtypeStruct((self.image_size, self.image_size, 3), jnp.uint8)
    else:
      enc = jax.ShapeDtypeStruct((self.state_dim,), jnp.float32)
    return {self.obs_key: enc, 'proprio': jax.ShapeDtypeStruct((self.proprio_dim,), jnp.float32)}

  @functools.cached_property
  def latent_spec(self) -> LatentSpec:
    """Static latent sizes, from `jax.eval_shape` of the encoder (nothing is run; cached)."""
    x = self.obs_spec[self.obs_key]
    out, _ = jax.eval_shape(lambda k, x: self.encoder.init_with_output(k, x),
                            jax.random.key(0), x)
    n, dv = out.shape
    return LatentSpec(n, dv, self.proprio_emb_dim, self.action_emb_dim, self.action_dim,
                      dv + self.proprio_emb_dim + self.action_emb_dim)

  def latent_shapes(self) -> Latent:
    """ShapeDtypeStructs of one frame's latent."""
    s = self.latent_spec
    return {'visual': jax.ShapeDtypeStruct((s.num_tokens, s.visual_dim), jnp.float32),
            'proprio': jax.ShapeDtypeStruct((s.proprio_emb_dim,), jnp.float32)}

  # ---------------------------------------------------------------- validation
  def _check_obs(self, obs: Mapping[str, jax.Array], float_pixels: bool = False
                 ) -> tuple[int, ...]:
    """Returns the leading batch shape of obs; raises ValueError on missing keys or bad shapes."""
    spec = self.obs_spec
    missing = [k for k in spec if k not in obs]
    if missing:
      raise ValueError(f'obs is missing {missing}; encoder {self.encoder_name!r} needs keys '
                       f'{sorted(spec)} (got {sorted(obs)}).')
    batch = None
    for k, s in spec.items():
      shape = _shape(obs[k])
      nd = len(s.shape)
      if len(shape) < nd or shape[len(shape) - nd:] != s.shape:
        raise ValueError(f'obs[{k!r}] must have shape (..., {", ".join(map(str, s.shape))}); '
                         f'got {shape}.')
      if k == 'pixels' and not float_pixels and jnp.dtype(obs[k].dtype) != jnp.uint8:
        raise ValueError(f'obs["pixels"] must be uint8; got {obs[k].dtype} (floats in [0, 255]: '
                         'pass float_pixels=True).')
      if k == 'pixels' and float_pixels and not jnp.issubdtype(obs[k].dtype, jnp.floating):
        raise ValueError(f'float_pixels=True needs floating obs["pixels"]; got {obs[k].dtype}.')
      lead = shape[:len(shape) - nd]
      if batch is not None and lead != batch:
        raise ValueError(f'obs entries have different leading shapes: {batch} vs {lead} '
                         f'(obs[{k!r}] {shape}).')
      batch = lead
    return batch

  def _check_latent(self, z: Mapping[str, jax.Array], what: str) -> tuple[int, ...]:
    if not isinstance(z, Mapping) or set(z) != {'visual', 'proprio'}:
      keys = sorted(z) if isinstance(z, Mapping) else type(z).__name__
      raise ValueError(f'{what} must be a Latent dict with keys visual, proprio; got {keys}.')
    s = self.latent_spec
    v, p = _shape(z['visual']), _shape(z['proprio'])
    if len(v) < 2 or v[-2:] != (s.num_tokens, s.visual_dim):
      raise ValueError(f'{what}["visual"] must be (..., {s.num_tokens}, {s.visual_dim}); got {v}.')
    if len(p) < 1 or p[-1] != s.proprio_emb_dim or p[:-1] != v[:-2]:
      raise ValueError(f'{what}["proprio"] must be {v[:-2] + (s.proprio_emb_dim,)} to match '
                       f'visual {v}; got {p}.')
    return v[:-2]

  def _check_actions(self, actions: jax.Array, lead: tuple[int, ...], what: str = 'actions'):
    a = _shape(actions)
    if a != lead + (self.action_dim,):
      raise ValueError(f'{what} must have shape {lead + (self.action_dim,)} (model actions of '
                       f'frameskip * A = {self.action_dim}); got {a}.')

  def _check_window(self, t: int):
    if not 1 <= t <= self.num_hist:
      raise ValueError(f'Window length T={t} must be in [1, num_hist={self.num_hist}].')

  # ---------------------------------------------------------------- parameters
  def init(self, key: jax.Array, obs_example: Mapping[str, jax.Array],
           encoder_params: Any = None) -> dict[str, Any]:
    """Random parameters {'encoder', 'proprio_encoder', 'action_encoder', 'predictor'}.

    Args:
      key: PRNG key.
      obs_example: obs dict (any leading dims) with the encoder's key and 'proprio'; only shapes
        are checked.
      encoder_params: pretrained encoder params to use instead of a random init (e.g. from
        `wmjax.training.pretrain_conv_autoencoder` or `load_dinov2_weights`); for dinov2_vits14, a non-empty
        `dinov2.weights` path in the config is loaded when this is None.
    """
    self._check_obs(obs_example)
    k_enc, k_prop, k_act, k_pred = jax.random.split(key, 4)
    frame = {k: jnp.zeros(s.shape, s.dtype) for k, s in self.obs_spec.items()}
    method = encoders_lib.ENCODERS[self.encoder_name].init_method
    init_encoder = lambda k: self.encoder.init(k, frame[self.obs_key], method=method).get(
        'params', {})
    if encoder_params is None and self.encoder_weights:
      encoder_params = dinov2_convert.load_dinov2_weights(self.encoder_weights, self.encoder)
    if encoder_params is not None:
      want = jax.tree.map(lambda x: x.shape, jax.eval_shape(init_encoder, k_enc))
      got = jax.tree.map(lambda x: tuple(np.shape(x)), encoder_params)
      if want != got:
        raise ValueError(f'encoder_params do not match encoder {self.encoder_name!r}: expected '
                         f'{want}, got {got}.')
    s = self.latent_spec

    @jax.jit
    def init_random(k_enc, k_prop, k_act, k_pred):  # One compile instead of op-by-op dispatch.
      tokens = jnp.zeros((self.num_hist, s.num_tokens, s.token_dim), jnp.float32)
      return {
          'encoder': init_encoder(k_enc),  # Replaced below when given (same compiled init).
          'proprio_encoder': self.proprio_encoder.init(
              k_prop, jnp.zeros((self.proprio_dim,)))['params'],
          'action_encoder': self.action_encoder.init(
              k_act, jnp.zeros((self.action_dim,)))['params'],
          'predictor': self.predictor.init(k_pred, tokens)['params'],
      }

    params = init_random(k_enc, k_prop, k_act, k_pred)
    if encoder_params is not None:
      params['encoder'] = jax.tree.map(jnp.asarray, encoder_params)
    return params

  # ---------------------------------------------------------------- encoders
  def encode(self, params: Mapping[str, Any], obs: Mapping[str, jax.Array], *,
             float_pixels: bool = False) -> Latent:
    """obs {'pixels': (..., H, W, 3) uint8 | 'state': (..., S), 'proprio': (..., P)} -> Latent
    {'visual': (..., N, Dv), 'proprio': (..., 10)}. The encoder is frozen (its parameters get no
    gradient). With `float_pixels` the pixels are floats in [0, 255] instead of uint8: unquantised
    renders, through which the latent is differentiable in the image."""
    self._check_obs(obs, float_pixels)
    return {'visual': self.encode_visual(params, obs[self.obs_key]),
            'proprio': self.encode_proprio(params, obs['proprio'])}

  def encode_visual(self, params: Mapping[str, Any], x: jax.Array) -> jax.Array:
    """x: (..., H, W, 3) pixels | (..., S) state (`obs_key`) -> (..., N, Dv) tokens of the frozen
    encoder (its parameters get no gradient, section 2)."""
    with jax.named_scope('encode'):
      enc = jax.lax.stop_gradient(params['encoder'])
      return self.encoder.apply({'params': enc}, x)

  def encode_proprio(self, params: Mapping[str, Any], proprio: jax.Array) -> jax.Array:
    """proprio: (..., P) normalised -> (..., 10) proprio embedding (trainable, section 2)."""
    with jax.named_scope('encode_proprio'):
      return self.proprio_encoder.apply({'params': params['proprio_encoder']},
                                        jnp.asarray(proprio, jnp.float32))

  def embed_actions(self, params: Mapping[str, Any], actions: jax.Array) -> jax.Array:
    """actions: (..., frameskip*A) normalised -> (..., 10) action embedding (section 2)."""
    a = _shape(actions)
    if not a or a[-1] != self.action_dim:
      raise ValueError(f'actions must be (..., {self.action_dim}) (frameskip * A); got {a}.')
    return self.action_encoder.apply({'params': params['action_encoder']},
                                     jnp.asarray(actions, jnp.float32))

  def decode(self, params: Mapping[str, Any], visual: jax.Array) -> jax.Array:
    """visual: (..., N, Dv) -> images (..., H, W, 3) float in [0, 1] (conv encoder only; pictures
    only, planners never use it)."""
    if self.encoder_name != 'conv':
      raise ValueError(f'decode needs the conv encoder (it owns a decoder); this model uses '
                       f'{self.encoder_name!r}.')
    x = self.encoder.apply({'params': params['encoder']}, visual, method='decode')
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

  # ---------------------------------------------------------------- predictor
  def predict_embedded(self, params: Mapping[str, Any], visual: jax.Array, proprio_emb: jax.Array,
                       action_emb: jax.Array, *, rng: jax.Array | None = None,
                       deterministic: bool = True, last_frame_only: bool = False) -> Latent:
    """The predictor on already-embedded inputs (adversarial training perturbs exactly these).

    Args:
      params: world-model params.
      visual: (..., T, N, Dv) visual tokens of frames 0..T-1, T <= num_hist.
      proprio_emb: (..., T, 10) proprio embeddings.
      action_emb: (..., T, 10) action embeddings (action t is taken at frame t).
      rng: PRNG key for dropout (required when deterministic=False).
      deterministic: False enables dropout.
      last_frame_only: only the last entry (T = 1 in the output), the predictor's last block
        computed for the last frame alone (`predict_next`).

    Returns:
      Latent with 'visual' (..., T, N, Dv), 'proprio' (..., T, 10); entry t predicts frame t+1.
    """
    lead = self._check_latent({'visual': visual, 'proprio': proprio_emb}, 'predictor input')
    a = _shape(action_emb)
    if a != lead + (self.action_emb_dim,):
      raise ValueError(f'action_emb must have shape {lead + (self.action_emb_dim,)}; got {a}.')
    if not lead:
      raise ValueError(f'predictor inputs need a time axis: visual (..., T, N, Dv); got '
                       f'{_shape(visual)}.')
    self._check_window(lead[-1])
    if not deterministic and rng is None:
      raise ValueError('predict with deterministic=False needs rng (a key for dropout).')
    with jax.named_scope('predict'):
      rngs = None if deterministic else {'dropout': rng}
      out = self.predictor.apply({'params': params['predictor']},
                                 _tokens(visual, proprio_emb, action_emb),
                                 deterministic=deterministic, rngs=rngs,
                                 last_frame_only=last_frame_only)
      return self._split_tokens(out)

  def _split_tokens(self, out: jax.Array) -> Latent:
    """Predictor output (..., N, Dv + Ep + Ea) -> Latent (..., N, Dv), (..., Ep)."""
    dv = out.shape[-1] - self.proprio_emb_dim - self.action_emb_dim
    return {'visual': out[..., :dv],
            'proprio': out[..., dv:dv + self.proprio_emb_dim].mean(axis=-2)}

  def predict(self, params: Mapping[str, Any], z: Latent, actions: jax.Array, *,
              rng: jax.Array | None = None, deterministic: bool = True) -> Latent:
    """Frame-causal prediction over a window.

    Args:
      params: world-model params.
      z: Latent with 'visual' (..., T, N, Dv), 'proprio' (..., T, 10); T <= num_hist.
      actions: (..., T, frameskip*A) normalised; action t is taken at frame t.
      rng: dropout key (required when deterministic=False).
      deterministic: False enables dropout.

    Returns:
      Latent (..., T, ...); entry t predicts frame t+1 from frames <= t.
    """
    lead = self._check_latent(z, 'z')
    self._check_actions(actions, lead)
    return self.predict_embedded(params, z['visual'], z['proprio'],
                                 self.embed_actions(params, actions), rng=rng,
                                 deterministic=deterministic)

  def predict_next(self, params: Mapping[str, Any], z: Latent, actions: jax.Array) -> Latent:
    """The frame after a window: `predict(...)`'s last entry, with the predictor's last block
    computed for the last frame alone (deterministic).

    Args:
      params: world-model params.
      z: Latent with 'visual' (..., T, N, Dv), 'proprio' (..., T, 10); T <= num_hist.
      actions: (..., T, frameskip*A) normalised.

    Returns:
      Latent with 'visual' (..., N, Dv), 'proprio' (..., 10).
    """
    lead = self._check_latent(z, 'z')
    self._check_actions(actions, lead)
    out = self.predict_embedded(params, z['visual'], z['proprio'],
                                self.embed_actions(params, actions), last_frame_only=True)
    return jax.tree.map(lambda x: jnp.squeeze(x, axis=len(lead) - 1), out)

  # ---------------------------------------------------------------- rollouts
  def rollout(self, params: Mapping[str, Any], z0: Latent, actions: jax.Array,
              mode: str = 'markov') -> Latent:
    """Open-loop latent rollout, differentiable w.r.t. actions (deterministic, no dropout).

    Args:
      params: world-model params.
      z0: Latent of one frame: 'visual' (N, Dv), 'proprio' (10,). Batch with `jax.vmap`.
      actions: (H, frameskip*A) normalised.
      mode: 'markov' (z_{t+1} = predictor([z_t | a_t]), the one-frame rollout used by gradient
        planning) or 'history' (DINO-WM: the window grows 1 -> num_hist frames, then slides).

    Returns:
      Latent with leading H+1 (z0 first).
    """
    if mode not in ROLLOUT_MODES:
      raise ValueError(f'Unknown rollout mode {mode!r}; choose one of {ROLLOUT_MODES}.')
    if self._check_latent(z0, 'z0') != ():
      raise ValueError(f'z0 must be one frame (visual (N, Dv)); got {_shape(z0["visual"])}. '
                       'Batch rollouts with jax.vmap.')
    a = _shape(actions)
    if len(a) != 2:
      raise ValueError(f'actions must be (H, {self.action_dim}); got {a}.')
    self._check_actions(actions, a[:1])
    with jax.named_scope('rollout'):
      if mode == 'markov':
        return self._rollout_markov(params, z0, actions)
      return self._rollout_history(params, z0, actions)

  def _rollout_markov(self, params, z0: Latent, actions: jax.Array) -> Latent:
    def step(z, a):
      one = jax.tree.map(lambda x: x[None], z)
      z_next = jax.tree.map(lambda x: x[0], self.predict(params, one, a[None]))
      return z_next, z_next

    _, zs = jax.lax.scan(step, z0, actions)
    return jax.tree.map(lambda x0, x: jnp.concatenate([x0[None], x]), z0, zs)

  def _rollout_history(self, params, z0: Latent, actions: jax.Array) -> Latent:
    """History rollout: the window grows 1 -> num_hist frames, then slides.

    While it grows, frame-causal attention leaves the keys and values of the frames already in
    the window unchanged, so each growing step runs the predictor on its newest frame only (a
    key/value cache); once the window slides, every frame moves to another position embedding and
    the whole window is recomputed, but its last block only for the newest frame (the one read).
    """
    k, h = self.num_hist, actions.shape[0]
    z, cache, zs = z0, (), [z0]
    for i in range(min(k, h)):  # Growing: frames 0..i, only frame i is new.
      tokens = _tokens(z['visual'][None], z['proprio'][None],
                       self.embed_actions(params, actions[i][None]))
      out, cache = self.predictor.apply({'params': params['predictor']}, tokens, cache=cache)
      z = self._split_tokens(out[0])
      zs.append(z)
    head = jax.tree.map(lambda *x: jnp.stack(x), *zs)
    if h <= k:
      return head

    def step(buf, act):  # Sliding: frames i-k+1..i and their actions; read the last prediction.
      z_next = self.predict_next(params, buf, act)
      return jax.tree.map(lambda b, x: jnp.concatenate([b[1:], x[None]]), buf, z_next), z_next

    windows = jnp.stack([actions[i - k + 1:i + 1] for i in range(k, h)])
    _, tail = jax.lax.scan(step, jax.tree.map(lambda x: x[1:], head), windows)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), head, tail)

def _tokens(visual: jax.Array, proprio_emb: jax.Array, action_emb: jax.Array) -> jax.Array:
  """Predictor input (section 2): proprio and action embeddings tiled on every patch,
  concatenated on features. visual (..., N, Dv), embeddings (..., E) -> (..., N, Dv + Ep + Ea)."""
  n = visual.shape[-2]
  tile = lambda e: jnp.broadcast_to(e[..., None, :], (*e.shape[:-1], n, e.shape[-1]))
  return jnp.concatenate([visual, tile(proprio_emb), tile(action_emb)], axis=-1)
