"""Training: hyper-parameters, the TAL assigner and loss, the loop, evaluation.

``hyp`` (the recipe) · ``assign`` (TaskAlignedAssigner) · ``loss`` (CIoU + DFL + BCE,
PGI's dual head) · ``optim`` (optimizer, warmup, schedule, EMA) · ``loop`` (the run:
``args``, ``setup``, ``epoch``, ``resume``, ``run_folder``, ``results``) · ``ddp``
(torchrun) · ``val`` (mAP by pycocotools) · ``plots`` — the reference's train_dual.py,
one stage a module.
"""
