"""wmjax: planning with learned world models in JAX.

Subpackages (import them directly; importing `wmjax` builds nothing):
  wmjax.envs      tasks (pusht, pointmaze, wall), wrappers, on-device rendering
  wmjax.data      offline datasets, behaviour policies, training windows
  wmjax.models    frozen encoders, frame-causal ViT predictor, WorldModel
  wmjax.planning  gradient planners, CEM, MPPI, GradCEM, objectives, MPC
  wmjax.training  losses, train-step factory, optimizer, checkpoints, AWM (adversarial),
                  OWM (online windows, replay buffer)
  wmjax.parallel  device mesh, data-parallel steps, sharded evaluation
  wmjax.distributed  multi-process (multi-host) start-up
  wmjax.io        run directories: atomic writes, stage-done markers, the workdir lock
  wmjax.checks    finite and range checks of arrays and config numbers
"""

__all__ = ['checks', 'data', 'distributed', 'envs', 'io', 'models', 'parallel', 'planning',
           'training']
