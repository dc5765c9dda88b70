"""The flexible multi-task model (Wei et al., ACL 2022): one frozen trunk, one branch per task.

  model   MultiTaskModel (trunk + branches on adapterkit.slicing, any single-stack family)
  io      save_multitask / load_multitask / save_task / delete_task, predict_file
  train   build_multitask: partial fine-tuning, distillation, the budget's pick, merging
It has its own CLI (`adapterkit multitask`) and folder format; it is not a transfer algorithm.
"""
