"""Evaluation of trained models: one module per model family, each writing JSON and Markdown.

``timbre evaluate composer`` runs :func:`timbre.evaluation.composer.evaluate_composer`.
"""
