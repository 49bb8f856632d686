"""The quality model's evaluation, one concern per module.

``heldout`` (the held-out sets and the degraded copy), ``store`` (per-image values cached by
content), ``methods`` (every quality method: models, baselines, the oracle), ``qualityface``
(the published peer model), ``pairs`` and ``weighted_erc`` (error-versus-reject on all pairs,
also under identity-resampling weights), ``bootstrap`` (intervals over identities),
``thresholds`` (score → fraction discarded → FNMR), ``degradation`` (how scores fall with
graded degradations), ``claims`` (the ship criteria), ``plots`` and ``report``.
``trainer/evaluate.py`` runs them in order.
"""
