"""Shared experiment configuration; task files (pusht.py, pointmaze.py, wall.py) build on it.

Every binary takes the same task config, e.g.
  python experiments/generate_data.py --config experiments/configs/wall.py:cpu --workdir runs/wall
  python experiments/train_world_model.py --config experiments/configs/wall.py:cpu --workdir runs/wall
Variants: `test` (seconds, used by tests/CI), `cpu` (the embedded default, 2 CPU cores), `paper`
(the paper's sizes, for a GPU).
"""

import ml_collections

VARIANTS = ('test', 'cpu', 'paper')


def check_variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise ValueError(f'Unknown config variant {variant!r}; choose one of {VARIANTS}.')
  return variant


def base_config(task: str, variant: str) -> ml_collections.ConfigDict:
  """Fields common to every task; task files override per variant."""
  check_variant(variant)
  c = ml_collections.ConfigDict()
  c.task = task            # Registered task name (wmjax.envs.load).
  c.variant = variant      # test | cpu | paper.
  c.seed = 0               # Master seed of the run.
  c.frameskip = 5          # Raw env steps per model action (paper: 5).
  c.image_size = 64        # Rendered image side in pixels (paper path: 224).

  # Offline dataset (experiments/generate_data.py).
  c.data = ml_collections.ConfigDict()
  c.data.num_trajectories = 8     # Behaviour trajectories to roll out.
  c.data.trajectory_length = 50   # Env steps per trajectory.
  c.data.batch_size = 256         # Trajectories simulated at once on device.
  c.data.val_fraction = 0.1       # Fraction of trajectories held out for validation.
  c.data.policy = 'random'        # Behaviour policy name (see wmjax.data.policies).
  c.data.seed = 0                 # Seed of the rollouts and of the train/val split (kept apart
                                  # from `seed` so runs with other seeds share one dataset).

  # World model (PAPER.md section 2) and its training (experiments/train_world_model.py).
  c.model = model_config(variant)
  c.train = train_config(variant)
  if variant == 'paper':
    c.image_size = 224  # DINO-WM renders 224 px images, resized to 196 for DINOv2 (section 2).
  return c


# Per-variant sizes of the world model. test: seconds; cpu: 2 CPU cores, tens of minutes
# (STACK.md: 4 layers x dim 128 at 16 tokens ~40 ms per batch-32 step); paper: DINO-WM.
_MODEL = {
    'test': dict(encoder='identity', depth=1, num_heads=2, head_dim=8, mlp_dim=32, dropout=0.0,
                 width=None, channels=(8, 16, 16, 16), token_dim=16),
    'cpu': dict(encoder='conv', depth=4, num_heads=4, head_dim=32, mlp_dim=512, dropout=0.1,
                width=128, channels=(32, 64, 96, 128), token_dim=64),
    'paper': dict(encoder='dinov2_vits14', depth=6, num_heads=16, head_dim=64, mlp_dim=2048,
                  dropout=0.1, width=None, channels=(32, 64, 128), token_dim=64),
}

_TRAIN = {
    'test': dict(steps=30, batch_size=8, log_every=5, eval_every=10, eval_batches=2,
                 checkpoint_every=10, keep=2, eval_windows=32, encoder_pretrain_steps=20,
                 encoder_pretrain_batch_size=8, encoder_pretrain_images=64),
    'cpu': dict(steps=10000, batch_size=32, log_every=50, eval_every=500, eval_batches=8,
                checkpoint_every=1000, keep=3, eval_windows=512, encoder_pretrain_steps=3000,
                encoder_pretrain_batch_size=64, encoder_pretrain_images=20000),
    'paper': dict(steps=200000, batch_size=32, log_every=100, eval_every=2000, eval_batches=16,
                  checkpoint_every=5000, keep=3, eval_windows=1024, encoder_pretrain_steps=0,
                  encoder_pretrain_batch_size=64, encoder_pretrain_images=0),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The `model` section: encoder, embeddings and predictor (PAPER.md section 2)."""
  v = _MODEL[check_variant(variant)]
  m = ml_collections.ConfigDict()
  m.encoder = v['encoder']   # Frozen observation encoder: identity (state as one token, no pixels)
                             # | conv (small autoencoder pretrained on the task's frames)
                             # | dinov2_vits14 (paper: 196 patch tokens x 384).
  m.proprio_emb_dim = 10     # Linear proprio embedding size (paper: 10).
  m.action_emb_dim = 10      # Linear embedding size of a frameskip action (paper: 10).

  m.conv = ml_collections.ConfigDict()   # Used when encoder == 'conv' (image side: image_size).
  m.conv.channels = v['channels']        # Channels of each stride-2 stage; tokens per frame:
                                         # (image_size / 2**len(channels))**2 (64 px, 4 stages: 16).
  m.conv.token_dim = v['token_dim']      # Dv, features per token.
  m.conv.normalize_tokens = True         # LayerNorm each token (fixed latent scale, like DINOv2).

  m.dinov2 = ml_collections.ConfigDict()  # Used when encoder == 'dinov2_vits14'.
  m.dinov2.weights = ''                   # Path of the converted ViT-S/14 weights (required).
  m.dinov2.resize_to = 196                # Input side after resizing: 14 x 14 patches (section 2).

  m.predictor = ml_collections.ConfigDict()     # Frame-causal ViT (section 2).
  m.predictor.depth = v['depth']                # Transformer blocks (paper: 6).
  m.predictor.num_heads = v['num_heads']        # Attention heads (paper: 16).
  m.predictor.head_dim = v['head_dim']          # Features per head (paper: 64).
  m.predictor.mlp_dim = v['mlp_dim']            # Hidden size of the GELU MLP (paper: 2048).
  m.predictor.dropout = v['dropout']            # Dropout rate (paper: 0.1).
  m.predictor.width = ml_collections.FieldReference(v['width'], field_type=int)
                                                # None: blocks at the token dim (DINO-WM, 404);
                                                # an int: project tokens to this width.
  m.predictor.attention_impl = ml_collections.FieldReference(None, field_type=str)
                                                # None | 'xla' | 'cudnn' (GPU, bfloat16).
  m.predictor.dtype = 'float32'                 # Compute dtype: float32 | bfloat16.
  return m


def train_config(variant: str) -> ml_collections.ConfigDict:
  """The `train` section: optimiser, schedule, logging, checkpoints, evaluation."""
  v = _TRAIN[check_variant(variant)]
  t = ml_collections.ConfigDict()
  t.steps = v['steps']                 # Optimiser steps of world-model training.
  t.batch_size = v['batch_size']       # Windows per step (paper: 32).
  t.predictor_lr = 5e-4                # AdamW lr of the predictor (DINO-WM code; paper text 5e-5).
  t.encoder_lr = 5e-4                  # AdamW lr of the proprio/action encoders (paper: 5e-4).
  t.weight_decay = 0.01                # AdamW decoupled weight decay (torch default, as DINO-WM).
  t.lr_schedule = 'constant'           # constant | cosine (decays to 0 after warmup).
  t.warmup_steps = 0                   # Linear warmup steps from lr 0.
  t.grad_clip = 0.0                    # Global-norm gradient clip; 0 disables (DINO-WM: none).
  t.log_every = v['log_every']         # Steps between training-metric records.
  t.eval_every = v['eval_every']       # Steps between validation losses (held-out trajectories).
  t.eval_batches = v['eval_batches']   # Validation batches (of batch_size fixed windows).
  t.checkpoint_every = v['checkpoint_every']  # Steps between checkpoints (and at the end).
  t.keep = v['keep']                   # Latest checkpoints kept (the best is kept separately).
  t.eval_horizon = 5                   # Final evaluation: open-loop steps (1 and this many).
  t.eval_windows = v['eval_windows']   # Final evaluation: held-out windows.
  t.encoder_pretrain_steps = v['encoder_pretrain_steps']  # Conv autoencoder steps (conv only).
  t.encoder_pretrain_batch_size = v['encoder_pretrain_batch_size']  # Images per pretrain step.
  t.encoder_pretrain_images = v['encoder_pretrain_images']  # Frames rendered for pretraining.
  t.encoder_pretrain_lr = 1e-3         # Peak Adam lr of conv pretraining (cosine decay).
  return t
