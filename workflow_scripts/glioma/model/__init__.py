"""The classifier: timm networks, training, prediction and evaluation.

Training reads top to bottom in ``training`` (:func:`~glioma.model.training.train_classifier`).
It leans on ``settings`` (the typed ``model:`` section) and ``identity`` (which settings shape
a model), ``data`` (what it reads from the shards: loaders, counts, patient weights), ``nets``
(timm networks), ``epoch`` (one pass over batches: train, validate, loss, optimiser, schedule),
``augment``, ``state`` (history, model selection, checkpoint files, resume), ``checkpoint``
(weights-only files, seeds, hashes) and ``distributed`` (data-parallel ranks); ``launch`` and
``train_cli`` start one process, or one per GPU under torchrun. After training: ``predict``
(slice and patient probabilities), ``baseline`` (a logistic regression on first-order features,
the yardstick), ``metrics`` (array metrics with bootstrap CIs), ``evaluate`` (metrics.json and
Table 2), ``plots`` and ``summary``.
"""
