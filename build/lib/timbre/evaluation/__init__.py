"""Evaluation of trained models: one module per model family, each writing JSON and Markdown.

- ``timbre evaluate autoencoder`` runs :func:`timbre.evaluation.autoencoder.evaluate_autoencoder`
  (reconstruction by multi-scale spectral distance and PESTO pitch accuracy, interpolation sweeps);
- ``timbre evaluate composer`` runs :func:`timbre.evaluation.composer.evaluate_composer`
  (held-out bits per token against a Kneser-Ney n-gram, statistics of generated pieces);
- :mod:`timbre.evaluation.metrics` holds the reusable audio metrics.
"""
