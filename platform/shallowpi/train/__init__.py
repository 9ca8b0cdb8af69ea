"""Training: the one loop (objectives, DDP/FSDP, checkpoints), fine-tuning of the π0
teacher on an episode store, and offline evaluation (action error on held-out episodes).

`trainer` runs the loop for any `objective.Objective`; `distributed` joins the process
group and wraps the trained module; `checkpoint` writes and reads run checkpoints;
`finetune` is what `platform train` runs; `offline_eval` scores a policy against a
mean-action baseline (the training set's); `progress` is the progress bar of long policy work.
"""
