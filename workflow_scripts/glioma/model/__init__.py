"""The classifier: timm networks, training, prediction and evaluation.

Modules, in pipeline order: ``nets`` (build and load networks), ``augment`` (tensor
augmentation), ``train`` (one epoch, validation, optimiser and schedule), ``checkpoint``
(resumable training state), ``fit`` (the training loop and its file-level entry point),
``predict`` (slice and patient probabilities), ``metrics`` (array metrics with bootstrap CIs),
``evaluate`` (metrics.json and Table 2) and ``plots`` (ROC and confusion figures).
"""
