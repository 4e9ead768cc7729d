"""The browser instrument: an NSynth Super style pad played live over HTTP.

NSynth Super precomputed every sound on a 9 x 9 grid; here the parallel decoder synthesizes the
blend at any point of the pad when a key is pressed. :func:`create_app` builds the ASGI app (HTTP API
under ``/api/v1`` plus the static page); ``timbre serve`` runs it with uvicorn.

>>> import timbre
>>> from timbre.serve import Instrument, create_app
>>> app = create_app(Instrument(timbre.load()))        # serve with: uvicorn.run(app)
"""

from __future__ import annotations

from timbre.serve.app import create_app
from timbre.serve.instrument import Instrument, NoteRequest, corner_weights

__all__ = ["Instrument", "NoteRequest", "corner_weights", "create_app"]
