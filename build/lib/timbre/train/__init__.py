"""Training: the Hydra app ``timbre-train``, the loop, checkpoints, EMA and DDP helpers.

Models stay plain ``nn.Module``s with a ``training_loss(batch) -> (loss, metrics)`` method; this
package is the only place that knows about optimizers, schedules, processes and run directories.
"""
