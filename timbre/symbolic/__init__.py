"""Symbolic music: MIDI tokenization and sampling from the composer model."""
