"""Shared experiment configuration; task files (pusht.py, pointmaze.py, wall.py) build on it.

Every binary takes the same task config, e.g.
  python experiments/generate_data.py --config experiments/configs/wall.py:cpu --workdir runs/wall
  python experiments/train_world_model.py --config experiments/configs/wall.py:cpu --workdir runs/wall
Variants: `test` (seconds, used by tests/CI), `cpu` (the embedded default, 2 CPU cores), `gpu`
(one GPU, minutes per task: the paper's planner budgets with a small conv world model, see
experiments/configs/reproduce.py:gpu), `paper` (the paper's sizes, for a GPU).
"""

import ml_collections

VARIANTS = ('test', 'cpu', 'gpu', 'paper')


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
  c.clip_actions = ml_collections.config_dict.placeholder(bool)
                           # None: execute raw actions as the task's reference does (Wall and
                           # PushT unclipped, PointMaze clipped to [-1, 1]); True clips Wall's
                           # and PushT's actions to [-1, 1] (an ablation, not the reference).
  c.token_cache_gb = 4.0   # Training and AWM: encode every dataset frame once when its tokens
                           # fit in this many GB (the encoder is frozen); else, or 0, render and
                           # encode each batch (wmjax/training/token_cache.py).

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
  c.plan = plan_config(variant)  # Planning evaluation (experiments/plan.py).
  c.finetune = finetune_config(variant)  # AWM / OWM finetuning (experiments/finetune.py).
  c.probe = probe_config(variant)  # Linear probe of the frozen encoder after training.
  if variant == 'paper':
    c.image_size = 224  # DINO-WM renders 224 px images, resized to 196 for DINOv2 (section 2).
  return c


# Per-variant sizes of the world model. test: seconds; cpu: 2 CPU cores, tens of minutes
# (STACK.md: 4 layers x dim 128 at 16 tokens ~40 ms per batch-32 step); gpu: a conv encoder with
# twice the cpu channels and the cpu predictor (at the paper's planner budgets every predictor
# FLOP is paid ~10^7 times per task and every layer adds latency to each of ~10^4 sequential
# gradient steps, so the predictor is what sets a one-GPU grid's time); paper: DINO-WM.
_MODEL = {
    'test': dict(encoder='identity', depth=1, num_heads=2, head_dim=8, mlp_dim=32, dropout=0.0,
                 width=None, channels=(8, 16, 16, 16), token_dim=16),
    'cpu': dict(encoder='conv', depth=4, num_heads=4, head_dim=32, mlp_dim=512, dropout=0.1,
                width=128, channels=(16, 32, 64, 64), token_dim=64),
    'gpu': dict(encoder='conv', depth=4, num_heads=4, head_dim=32, mlp_dim=512, dropout=0.1,
                width=128, channels=(32, 64, 128, 128), token_dim=64),
    'paper': dict(encoder='dinov2_vits14', depth=6, num_heads=16, head_dim=64, mlp_dim=2048,
                  dropout=0.1, width=None, channels=(32, 64, 128), token_dim=64),
}

_TRAIN = {
    'test': dict(steps=30, batch_size=8, log_every=5, eval_every=10, eval_batches=2,
                 checkpoint_every=10, keep=2, eval_windows=32, encoder_pretrain_steps=20,
                 encoder_pretrain_batch_size=8, encoder_pretrain_images=64,
                 encoder_pretrain_state_weight=1.0),
    'cpu': dict(steps=10000, batch_size=32, log_every=50, eval_every=500, eval_batches=8,
                checkpoint_every=1000, keep=3, eval_windows=512, encoder_pretrain_steps=600,
                encoder_pretrain_batch_size=32, encoder_pretrain_images=20000,
                encoder_pretrain_state_weight=1.0),
    # gpu: batch 128 costs about what batch 32 does (a step is latency-bound at these sizes).
    'gpu': dict(steps=2500, batch_size=128, log_every=100, eval_every=1000, eval_batches=4,
                checkpoint_every=1000, keep=2, eval_windows=1024, encoder_pretrain_steps=1000,
                encoder_pretrain_batch_size=128, encoder_pretrain_images=16000,
                encoder_pretrain_state_weight=1.0),
    'paper': dict(steps=200000, batch_size=32, log_every=100, eval_every=2000, eval_batches=16,
                  checkpoint_every=5000, keep=3, eval_windows=1024, encoder_pretrain_steps=0,
                  encoder_pretrain_batch_size=64, encoder_pretrain_images=0,
                  encoder_pretrain_state_weight=0.0),
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
  if variant == 'paper':
    m.predictor.pad_width_to = 0                # 0: off; else round the block width up to a
                                                # multiple (128: 404 -> 512, through the
                                                # width projections; PAPER.md section 7).
                                                # Paper variant only: a new field changes the
                                                # model fingerprint that existing cpu/test
                                                # checkpoints are checked against.
  m.predictor.attention_impl = ml_collections.FieldReference(None, field_type=str)
                                                # None | 'xla' | 'cudnn' (GPU, bfloat16; falls
                                                # back to xla elsewhere) | 'auto' (cudnn on a GPU
                                                # when dtype is bfloat16, else the default).
  m.predictor.dtype = 'float32'                 # Compute dtype: float32 | bfloat16 (parameters
                                                # and outputs stay float32).
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
  t.init_from = ''                     # A world-model dir (<run>/world_model) to start from: its
                                       # latest parameters, encoder included (no pretraining),
                                       # on this run's dataset; same task and model config.
  t.encoder_from = ''                  # A world-model dir whose frozen encoder this run uses in
                                       # place of pretraining one (its latest checkpoint; same
                                       # task and encoder config; any predictor).
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
  t.encoder_pretrain_state_weight = v['encoder_pretrain_state_weight']
                                       # Weight of the auxiliary linear readout of the normalised
                                       # simulator state from the tokens during conv pretraining
                                       # (wmjax/models/conv.py); 0: reconstruction only.
  t.encoder_pretrain_feature_weights = ''  # Weights of state features in that readout's MSE,
                                       # 'name=w,...' (names: wmjax.data.state_features; an
                                       # angle weighs its cos and sin); '': all 1.
  t.predictor_readout_weight = 0.0     # Weight of a read-out term in the predictor's loss: the
                                       # squared error of the predicted latent as a linear probe
                                       # (state features in training stds <- visual tokens, fitted
                                       # on probe.train_frames training frames) reads it, beside
                                       # the latent MSE; 0: the paper's loss alone.
  t.predictor_readout_features = ''    # Feature weights inside that term, 'name=w,...' as above.
  return t


# Frames of the linear probe (train_frames: training split, test_frames: held-out split).
# motion_windows: held-out windows the predicted state change is scored on.
_PROBE = {'test': (256, 128, 32), 'cpu': (2000, 1000, 1000), 'gpu': (2000, 1000, 1000),
          'paper': (2000, 1000, 1000)}


def probe_config(variant: str) -> ml_collections.ConfigDict:
  """The `probe` section: linear-probe R^2 of the frozen encoder per state feature, written to
  `world_model/eval.json` by experiments/train_world_model.py (wmjax/training/probe.py). Not a
  training setting: a run resumes whatever these are."""
  train_frames, test_frames, motion_windows = _PROBE[check_variant(variant)]
  p = ml_collections.ConfigDict()
  p.train_frames = train_frames  # Training-split frames the ridge map is fitted on; 0: no probe.
  p.test_frames = test_frames    # Held-out frames R^2 is measured on.
  p.ridge = 1e-3                 # Ridge, relative to the mean eigenvalue of the latents' Gram.
  p.motion_windows = motion_windows  # Held-out windows on which the probe reads the state change
                                     # the model predicts over train.eval_horizon steps; 0: off.
  return p


# Planning budgets per variant. paper: PAPER.md section 3. cpu: every planner's work per plan is
# scaled by the same factor 1/5 (gradient steps / 5; sampling populations and elites / 5 with
# their iteration counts kept), so the planners' relative budgets stay the paper's.
# test: seconds. Tuples of the sampling planners: (num_samples, num_elites, num_iterations).
_PLAN = {
    'test': dict(gd_steps=4, adam_steps=4, adam_open_loop_steps=6, cem=(16, 4, 2),
                 mppi=(16, 4, 2), gradcem=(8, 2, 2), num_instances=4, num_videos=2, budget=5),
    'cpu': dict(gd_steps=200, adam_steps=20, adam_open_loop_steps=60, cem=(60, 6, 30),
                mppi=(102, 13, 6), gradcem=(60, 6, 30), num_instances=50, num_videos=4,
                budget=30),
    # gpu: the paper's budgets; no videos (each row would compile its own renderer and decoder).
    'gpu': dict(gd_steps=1000, adam_steps=100, adam_open_loop_steps=300, cem=(300, 30, 30),
                mppi=(512, 64, 6), gradcem=(300, 30, 30), num_instances=50, num_videos=0,
                budget=30),
    'paper': dict(gd_steps=1000, adam_steps=100, adam_open_loop_steps=300, cem=(300, 30, 30),
                  mppi=(512, 64, 6), gradcem=(300, 30, 30), num_instances=50, num_videos=4,
                  budget=30),
}


def plan_config(variant: str) -> ml_collections.ConfigDict:
  """The `plan` section: planner, objective, MPC protocol and budget (PAPER.md section 3).

  Each planner has its own sub-section with its settings, the objective and rollout it uses by
  default, and how many model actions it executes per replan. `plan.objective` / `plan.rollout`
  (None by default) override the chosen planner's for a run.
  """
  v = _PLAN[check_variant(variant)]
  p = ml_collections.ConfigDict()
  p.planner = 'adam'        # gd | adam | cem | mppi | gradcem (wmjax.experiment.planners).
  p.model = 'world_model'   # world_model | simulator (the true dynamics: the ceiling of what a
                            # perfect model could give).
  p.simulator_cost = 'latent'  # With model=simulator: latent (the world model's own cost: its
                               # encoder on rendered simulated frames) | state (z-scored states;
                               # needs no world model) | distance (the task's own distance to
                               # the goal, what success tests; needs no world model).
  p.mode = 'mpc'            # mpc (replan from each real observation) | open_loop (one plan of
                            # `horizon` model actions executed blind).
  p.horizon = 5             # Model actions per plan (paper: 5).
  p.budget = v['budget']    # Executed model actions per MPC episode (env steps: budget *
                            # frameskip); replans = budget / execute, the same executed steps for
                            # every planner. The reference loop has no cap (section 3); task
                            # files set their own.
  p.objective = ml_collections.FieldReference(None, field_type=str)
                            # None: the planner's own; else last | all (section 3).
  p.objective_base = 0.5    # Decay of the `all` weights c_t = base^t / sum_s base^s.
  p.alpha = 1.0             # Proprio weight of the cost (paper: 1 PushT/Wall, 0 PointMaze).
  p.rollout = ml_collections.FieldReference(None, field_type=str)
                            # None: the planner's own; else markov | history.
  p.bounded = False         # Clip plans into the normalised range of valid raw actions (the
                            # paper's GBP is unbounded; report both).
  p.num_instances = v['num_instances']  # Evaluation problems (paper: 50); must divide by the
                                        # device count.
  p.seed = 0                # Problem i comes from env.sample_problem(fold_in(key(seed), i)).
  p.problem_indices = ''    # '' : problems 0 .. num_instances-1; else which problems, e.g.
                            # '2,17-19,40' (as many as num_instances): rerun a subset, such as
                            # another row's misses, on exactly the problems it had.
  p.num_videos = v['num_videos']  # Instances written as planned-vs-executed videos.
  p.run_name = ''           # Output folder under <workdir>/plan/; '' derives it from the run.
  p.checkpoint = 'best'     # Which world-model checkpoint: best | latest.

  # Section 3, GD (DINO-WM): plain gradient steps lr 1, 1000 steps, noise 0.003.
  p.gd = ml_collections.ConfigDict(dict(
      lr=1.0, num_steps=v['gd_steps'], noise_std=0.003, init_std=1.0,
      objective='all', rollout='markov', execute=1))
  # Section 3, GBP: Adam lr 0.2 x 100, init N(0, 1), noise 0.003, objective `all` base 0.5,
  # one-frame rollout, 1 action executed per replan; open loop: lr 0.3 x 300.
  p.adam = ml_collections.ConfigDict(dict(
      lr=0.2, num_steps=v['adam_steps'], noise_std=0.003, init_std=1.0,
      open_loop_lr=0.3, open_loop_num_steps=v['adam_open_loop_steps'],
      objective='all', rollout='markov', execute=1))
  # Section 3, CEM (DINO-WM): 300 samples, top 30, 30 iterations (PushT; 10 PointMaze/Wall),
  # mu0 = 0, sigma0 = 1, objective `last`, all 5 actions executed, then replan.
  s, e, i = v['cem']
  p.cem = ml_collections.ConfigDict(dict(
      num_samples=s, num_elites=e, num_iterations=i, init_std=1.0,
      objective='last', rollout='history', execute=5))
  # Section 3, MPPI (TD-MPC2): 512 samples, 64 elites, 6 iterations, temperature 0.5,
  # std in [0.05, 2] from 2; one action executed per replan, as TD-MPC2 does.
  s, e, i = v['mppi']
  p.mppi = ml_collections.ConfigDict(dict(
      num_samples=s, num_elites=e, num_iterations=i, temperature=0.5, init_std=2.0,
      min_std=0.05, max_std=2.0, objective='last', rollout='history', execute=1))
  # Section 3, GradCEM: CEM with one Adam step (lr 0.3) on every sample per iteration; elites
  # from the refined samples.
  s, e, i = v['gradcem']
  p.gradcem = ml_collections.ConfigDict(dict(
      lr=0.3, num_grad_steps=1, noise_std=0.0, num_samples=s, num_elites=e,
      num_iterations=i, init_std=1.0, objective='last', rollout='history', execute=5))
  return p


# Finetuning sizes per variant. The paper does not publish a number of finetuning steps; these
# are ours. cpu: planning inside OWM shrinks like the planners' budgets (Adam steps / 5).
_FINETUNE = {
    'test': dict(steps=12, batch_size=8, log_every=4, eval_every=6, checkpoint_every=6,
                 owm_every=4, owm_segments=4, owm_plan_steps=3, owm_capacity=64,
                 owm_horizons=(2, 3)),
    'cpu': dict(steps=1000, batch_size=32, log_every=50, eval_every=250, checkpoint_every=250,
                owm_every=10, owm_segments=16, owm_plan_steps=20, owm_capacity=8192,
                owm_horizons=(5, 5)),
    # gpu: the paper's batch and OWM planner (Adam x 100 on 8 segments every 10 steps), a short
    # finetune (each OWM collection is ~0.4 s of sequential planning on one GPU).
    'gpu': dict(steps=200, batch_size=40, log_every=50, eval_every=200, checkpoint_every=200,
                owm_every=10, owm_segments=8, owm_plan_steps=100, owm_capacity=16384,
                owm_horizons=(5, 5)),
    'paper': dict(steps=20000, batch_size=40, log_every=100, eval_every=2000,
                  checkpoint_every=2000, owm_every=10, owm_segments=8, owm_plan_steps=100,
                  owm_capacity=65536, owm_horizons=(5, 5)),
}


def finetune_config(variant: str) -> ml_collections.ConfigDict:
  """The `finetune` section: AWM / OWM finetuning of a trained world model (PAPER.md section 4).

  The run reads the pretrained world model from `pretrained` (default `<workdir>/world_model`) and
  writes `<workdir>/finetune_<method>/` (checkpoints, metrics, eval.json).
  """
  v = _FINETUNE[check_variant(variant)]
  f = ml_collections.ConfigDict()
  f.method = 'adversarial'        # adversarial (AWM) | online (OWM).
  f.pretrained = ''               # Checkpoint dir of the base model; '' = <workdir>/world_model.
  f.pretrained_checkpoint = 'best'  # best | latest.
  f.steps = v['steps']            # Finetuning optimiser steps.
  f.batch_size = v['batch_size']  # Windows per step (paper: 8 segments x 5 windows = 40).
  f.predictor_lr = 1e-5           # Section 2: finetuning predictor lr 1e-5.
  f.encoder_lr = 5e-4             # Section 2: proprio/action encoders 5e-4.
  f.log_every = v['log_every']
  f.eval_every = v['eval_every']  # Validation on held-out trajectories (as in training).
  f.checkpoint_every = v['checkpoint_every']

  # AWM (section 4): FGSM with random start; eps = lambda * std of each channel group.
  f.adversarial = ml_collections.ConfigDict(dict(
      lambda_visual=0.05, lambda_proprio=0.02, lambda_action=0.02, step_size=1.25, num_steps=1,
      radii='first_batch',     # first_batch (paper) | per_batch (authors' code).
      clean_weight=0.0))       # Weight of an added clean-input term (paper: none).

  # OWM (section 4): every `every` batches, plan from dataset segments to a goal `goal_horizon`
  # model steps ahead with Adam (lr 0.3, history rollout, objective last), execute the plans in
  # the simulator and add the executed windows to a replay buffer trained on beside the data.
  # planner: adam (the paper's, with lr and num_steps below) | gd | cem | mppi | gradcem (ours:
  # that planner's plan.<planner> settings, for its own train-test gap).
  f.online = ml_collections.ConfigDict(dict(
      planner='adam', every=v['owm_every'], num_segments=v['owm_segments'], goal_horizon=v['owm_horizons'][0],
      planner_horizon=v['owm_horizons'][1],
      lr=0.3, num_steps=v['owm_plan_steps'], objective='last', rollout='history',
      capacity=v['owm_capacity'],
      online_fraction=0.5))    # Share of each batch drawn from the buffer once it holds data.
  return f
