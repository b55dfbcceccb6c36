"""Frame-causal attention (wmjax.models.attention) under vmap, nested vmaps, scan and grad.

The 'prefix' form is what the fused cuDNN kernel runs; on a CPU it runs here with XLA attention
through the same slicing code and is checked against the plain masked
`jax.nn.dot_product_attention`. The cuDNN path itself cannot run without a GPU, but its batching
rules run at trace time: the last tests trace it (`jax.make_jaxpr`, nothing is compiled) with jax's
cuDNN presence checks stubbed.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wmjax.models import attention
from wmjax.models import predictor as predictor_lib

T, N, H, D = 3, 4, 2, 8  # Frames, tokens per frame, heads, head dim.
L = T * N


def _qkv(lead, seed=0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return tuple(jax.random.normal(k, lead + (L, H, D)).astype(dtype) for k in keys)


def reference(q, k, v):
  """Plain masked XLA attention on (..., L, H, D), leading axes folded into one batch axis."""
  lead = q.shape[:-3]
  fold = lambda x: x.reshape((-1,) + x.shape[-3:])
  mask = jnp.asarray(attention.frame_causal_mask(T, N))[None, None]
  out = jax.nn.dot_product_attention(fold(q), fold(k), fold(v), mask=mask, implementation='xla')
  return out.reshape(lead + out.shape[1:])


def prefix(q, k, v, num_frames=T):
  return attention.frame_causal_attention(q, k, v, num_frames, implementation='xla',
                                          method='prefix')


def close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol,
                             rtol=tol)


def test_both_forms_match_the_masked_reference():
  q, k, v = _qkv((2,))
  want = reference(q, k, v)
  close(prefix(q, k, v), want)
  close(attention.frame_causal_attention(q, k, v, T, method='mask'), want)
  assert attention.default_method('cudnn') == 'prefix'
  assert attention.default_method('xla') == attention.default_method(None) == 'mask'
  # One frame: plain attention; frame t never sees frame t + 1.
  close(prefix(q[:, :N], k[:, :N], v[:, :N], 1),
        jax.nn.dot_product_attention(q[:, :N], k[:, :N], v[:, :N]))
  later = k.at[:, N:].set(0.0), v.at[:, N:].set(0.0)
  close(prefix(q, *later)[:, :N], prefix(q, k, v)[:, :N])


def test_under_vmap_nested_vmaps_and_scan():
  q, k, v = _qkv((3, 2, 2))  # vmap axes (3, 2) over a batch of 2.
  want = reference(q, k, v)
  close(jax.jit(jax.vmap(prefix))(q[0], k[0], v[0]), want[0])
  close(jax.jit(jax.vmap(jax.vmap(prefix)))(q, k, v), want)
  # Mapped axes in other positions come back where they were asked for.
  swap = lambda x: jnp.moveaxis(x, 0, 1)
  got = jax.jit(jax.vmap(jax.vmap(prefix), in_axes=1, out_axes=1))(swap(q), swap(k), swap(v))
  close(got, swap(want))

  # The planners' shape: vmap over instances of a scan over iterations of a vmap over samples.
  def iterate(q, k, v):
    def body(carry, _):
      out = jax.vmap(prefix)(carry, k, v)
      return out, out[:, :, :N].sum()
    return jax.lax.scan(body, q, None, length=2)

  def iterate_ref(q, k, v):  # (3, 2, 2, L, H, D) -> the same and (3, 2) sums.
    first = reference(q, k, v)
    out = reference(first, k, v)
    sums = lambda x: x[:, :, :, :N].sum(axis=(1, 2, 3, 4, 5))
    return out, jnp.stack([sums(first), sums(out)], axis=-1)

  got, got_sums = jax.jit(jax.vmap(iterate))(q, k, v)
  want, want_sums = iterate_ref(q, k, v)
  close(got, want)
  close(got_sums, want_sums, tol=1e-4)


def test_gradients_under_vmap_and_grad():
  q, k, v = _qkv((3, 2))
  loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))
  grads = jax.grad(loss(prefix), argnums=(0, 1, 2))
  want = jax.vmap(jax.grad(loss(reference), argnums=(0, 1, 2)))(q, k, v)
  for g, w in zip(jax.jit(jax.vmap(grads))(q, k, v), want):
    close(g, w)
  # grad of a vmapped sum, and vmap(vmap(grad)).
  summed = lambda f: lambda q, k, v: jnp.sum(jax.vmap(loss(f))(q, k, v))
  for g, w in zip(jax.jit(jax.grad(summed(prefix), argnums=(0, 1, 2)))(q, k, v), want):
    close(g, w)
  q2, k2, v2 = (x.reshape((3, 1, 2) + x.shape[2:]) for x in (q, k, v))
  got = jax.jit(jax.vmap(jax.vmap(grads)))(q2, k2, v2)
  for g, w in zip(got, want):
    close(g.reshape(w.shape), w)


def test_bfloat16_stays_bfloat16_and_is_close():
  q, k, v = _qkv((2,), dtype=jnp.bfloat16)
  out = jax.jit(jax.vmap(prefix))(q[None], k[None], v[None])[0]
  assert out.dtype == jnp.bfloat16
  want = reference(*(x.astype(jnp.float32) for x in (q, k, v)))
  close(out, want, tol=3e-2)


def test_bad_arguments_raise():
  q, k, v = _qkv((1,))
  with pytest.raises(ValueError, match='method=.flash.; choose one of'):
    attention.frame_causal_attention(q, k, v, T, method='flash')
  with pytest.raises(ValueError, match='do not split into num_frames=5'):
    attention.frame_causal_attention(q, k, v, 5)
  with pytest.raises(ValueError, match=r'\(B, L, H, D\)'):
    attention.frame_causal_attention(q[0], k[0], v[0], T)


PREDICTOR = dict(num_frames=T, depth=1, num_heads=H, head_dim=D, mlp_dim=32)


@pytest.fixture(scope='module', name='predictor_setup')
def fixture_predictor_setup():
  """Tiny predictor params and tokens (2 instances x 2 windows x T frames x N tokens x 20)."""
  tokens = jax.random.normal(jax.random.key(4), (2, 2, T, N, 20))
  params = jax.jit(predictor_lib.Predictor(**PREDICTOR).init)(jax.random.key(5), tokens[0])
  return params, tokens


def test_predictor_prefix_matches_mask_under_vmap_and_grad(predictor_setup):
  params, tokens = predictor_setup

  def value_and_grads(method):
    model = predictor_lib.Predictor(attention_method=method, **PREDICTOR)
    loss = lambda x: jnp.sum(jnp.square(model.apply(params, x)[:, -1]))
    return jax.vmap(jax.value_and_grad(loss))(tokens)  # vmap over instances of grad.

  (v_mask, g_mask), (v_prefix, g_prefix) = jax.jit(
      lambda: (value_and_grads('mask'), value_and_grads('prefix')))()
  close(v_prefix, v_mask)
  close(g_prefix, g_mask)
  assert float(jnp.abs(g_mask[:, :, 0]).max()) > 0  # The last frame sees the first.
  with pytest.raises(ValueError, match='attention method'):
    predictor_lib.Predictor(attention_method='flash', **PREDICTOR).apply(params, tokens[0])


# ------------------------------------------------------------- the cuDNN path, traced only
@pytest.fixture(name='cudnn_traceable')
def fixture_cudnn_traceable(monkeypatch):
  """Lets the cuDNN attention trace on a CPU (its presence checks stubbed; nothing compiles)."""
  fused = pytest.importorskip('jax._src.cudnn.fused_attention_stablehlo')
  if not (hasattr(fused, 'cuda_versions') and hasattr(fused, 'check_compute_capability')):
    pytest.skip("this jax's cuDNN attention checks are not where this test expects them")
  monkeypatch.setattr(fused, 'cuda_versions',
                      types.SimpleNamespace(cudnn_get_version=lambda: 91000))
  monkeypatch.setattr(fused, 'check_compute_capability', lambda capability: True)
  real = predictor_lib.resolve_attention_impl
  monkeypatch.setattr(predictor_lib, 'resolve_attention_impl',
                      lambda impl, dtype, head_dim=64, backend=None: real(impl, dtype, head_dim,
                                                                          backend='gpu'))


def test_cudnn_prefix_traces_under_vmap_scan_and_grad(cudnn_traceable):
  del cudnn_traceable  # Used for its stubs.
  q, k, v = _qkv((3, 2, 2), dtype=jnp.bfloat16)
  cudnn = lambda q, k, v: attention.frame_causal_attention(q, k, v, T, implementation='cudnn')
  sq = lambda q, k, v: jnp.sum(jnp.square(cudnn(q, k, v).astype(jnp.float32)))

  def planner_like(q, k, v):  # vmap(scan(vmap(attention))), as CEM and MPPI run it.
    body = lambda c, _: (jax.vmap(cudnn)(c, k, v), None)
    return jax.lax.scan(body, q, None, length=2)[0]

  for name, fn, args in [('vmap', jax.vmap(cudnn), (q[0], k[0], v[0])),
                         ('vmap(vmap)', jax.vmap(jax.vmap(cudnn)), (q, k, v)),
                         ('vmap(scan(vmap))', jax.vmap(planner_like), (q, k, v)),
                         ('grad', jax.grad(sq), (q[0, 0], k[0, 0], v[0, 0])),
                         ('vmap(grad)', jax.vmap(jax.grad(sq)), (q[0], k[0], v[0])),
                         ('vmap(vmap(grad))', jax.vmap(jax.vmap(jax.grad(sq))), (q, k, v))]:
    jaxpr = str(jax.make_jaxpr(fn)(*args))
    assert 'cudnn' in jaxpr or 'dot_product_attention' in jaxpr, name


def test_cudnn_predictor_traces_in_vmapped_planners(cudnn_traceable, predictor_setup):
  del cudnn_traceable  # Used for its stubs.
  params, tokens = predictor_setup
  model = predictor_lib.Predictor(attention_impl='cudnn', dtype='bfloat16', **PREDICTOR)

  def rollout_cost(x):  # A rollout: a scan of predictor calls.
    step = lambda c, _: (model.apply(params, c), None)
    return jnp.sum(jnp.square(jax.lax.scan(step, x, None, length=2)[0][:, -1]))

  def population(x):  # CEM: vmap over samples of rollouts (masked cuDNN failed here).
    return jax.vmap(rollout_cost)(jnp.stack([x, -x]))

  def gradient_steps(x):  # GBP: a scan of gradient steps through rollouts.
    step = lambda c, _: (c - 0.1 * jax.grad(rollout_cost)(c), None)
    return jax.lax.scan(step, x, None, length=2)[0]

  for fn in (population, gradient_steps):  # Each vmapped over instances of one window each.
    jaxpr = str(jax.make_jaxpr(jax.vmap(fn))(tokens[:, 0]))
    assert 'cudnn' in jaxpr or 'dot_product_attention' in jaxpr
