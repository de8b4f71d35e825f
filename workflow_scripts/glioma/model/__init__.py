"""The classifier: timm networks, training, prediction and evaluation.

Modules, in pipeline order: ``nets`` (build and load networks), ``augment`` (tensor
augmentation), ``data`` (loaders over the shards), ``train`` (one epoch, validation, optimiser
and schedule), ``checkpoint`` (checkpoint files, seeds, run identity), ``state`` (history, early
stopping, weights records), ``distributed`` (data-parallel ranks), ``fit`` (the training loop),
``classifier`` (its file-level entry point), ``launch`` and ``train_cli`` (one process, or one
per GPU under torchrun), ``predict`` (slice and patient probabilities), ``metrics`` (array
metrics with bootstrap CIs), ``evaluate`` (metrics.json and Table 2) and ``plots`` (ROC and
confusion figures).
"""
