"""Reading and writing what timbre consumes and produces: audio files, MIDI scores, and atomic file writes."""
