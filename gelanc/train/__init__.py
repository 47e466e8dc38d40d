"""Training: hyper-parameters, the TAL assigner and loss, the loop, evaluation.

``hyp`` (the recipe) · ``assign`` (TaskAlignedAssigner) · ``loss`` (CIoU + DFL + BCE,
PGI's dual head) · ``loop`` (SGD, warmup, EMA, AMP, DDP, checkpoints) · ``val``
(mAP by pycocotools) — the reference's train_dual.py, one stage a module.
"""
