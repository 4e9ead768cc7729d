"""Evaluation of trained models, and the test sets they are measured on.

- :mod:`~timbre.evaluation.metrics`: audio metrics (spectral distance, loudness-envelope error,
  timbre identification by MFCC statistics, PESTO pitch, spectral centroid, sweep smoothness);
- :mod:`~timbre.evaluation.notes`: which notes (folders of notes in any layout, and the choice among them);
- :mod:`~timbre.evaluation.scoring`: running an autoencoder and its baselines on notes, scoring every note;
- :mod:`~timbre.evaluation.report`: the one report writer (JSON + Markdown) every evaluation and model card uses;
- :mod:`~timbre.evaluation.testset`: the standard test set, 24 GM programs x 5 pitches from TimGM6mb;
- ``timbre evaluate autoencoder`` runs :func:`timbre.evaluation.autoencoder.evaluate_autoencoder`;
  ``timbre evaluate composer`` runs :func:`timbre.evaluation.composer.evaluate_composer` (held-out bits
  per token against a Kneser-Ney n-gram, statistics of generated pieces);
  ``timbre evaluate build-testset`` runs :func:`timbre.evaluation.testset.build_testset`.
"""
