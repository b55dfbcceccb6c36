"""wmjax: planning with learned world models in JAX.

Subpackages (import them directly; importing `wmjax` builds nothing):
  wmjax.envs      tasks (pusht, pointmaze, wall), wrappers, on-device rendering
  wmjax.data      offline datasets, behaviour policies, training windows
  wmjax.models    frozen encoders, frame-causal ViT predictor, WorldModel
  wmjax.planning  gradient planners, CEM, MPPI, GradCEM, objectives, MPC
  wmjax.training  losses, train-step factory, optimizer, checkpoints
"""

__all__ = ['data', 'envs', 'models', 'planning', 'training']
