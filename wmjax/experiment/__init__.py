"""The experiment pipeline behind the binaries in `experiments/`, one module per stage.

  generate    behaviour rollouts into `<workdir>/dataset/`     experiments/generate_data.py
  train       the world model and its held-out evaluation      experiments/train_world_model.py
  finetune    AWM or OWM on the trained model                  experiments/finetune.py
  plan        a planner evaluated open loop or under MPC       experiments/plan.py
  gap         the train-test gap: offline vs induced error     experiments/diagnose_gap.py
  reproduce   every stage for every task, the paper's grid     experiments/reproduce.py

beside what they share: the run directory (`layout`), the step loop of training and finetuning
(`loop`), held-out evaluation (`evaluation`), planners by name (`planners`), the outputs of
planning and of the reproduction (`plan_report`, `reproduce_report`), the command line (`cli`)
and what every binary does first (`runtime`). A binary is an absl wrapper over one stage; the
stages take a config (`experiments/configs`) and a workdir and are importable, so tests and
notebooks run them in process. Importing this package imports no stage (they need the `train`
extra).
"""
