"""NSynth's label vocabularies and the General MIDI program -> NSynth family/source mapping.

NSynth labels every instrument with one of 11 families and one of 3 sources:

- ``acoustic``: recorded from an acoustic instrument;
- ``electronic``: recorded from an electronic instrument (electric guitar, electric piano, organ);
- ``synthetic``: produced by a synthesizer.

A soundfont preset is a set of recorded samples, so a General MIDI (GM) program gets the source
of the instrument its samples come from: ``acoustic`` for acoustic instruments (piano, violin,
flute), ``electronic`` for electric and electronic ones (electric pianos, drawbar and rock
organs, electric guitars and basses), ``synthetic`` for synth basses, synth strings and brass,
synth voice and the lead, pad and effect programs (80-103).

Family choices where GM and NSynth disagree (every program 0-127 has a family):

- celesta (8) is a ``keyboard``; glockenspiel to tubular bells and dulcimer (9-15) are ``mallet``;
- accordions and harmonica (21-23) are free-reed instruments: ``reed``;
- harp (46) is a ``string``; timpani (47) is struck with mallets: ``mallet``;
- string ensembles and synth strings (48-51) are ``string``; choir, voice and synth voice (52-54)
  are ``vocal``; orchestra hit (55), a brass-led orchestral stab, is ``brass``;
- all pipes (72-79) are ``flute``; NSynth has no pad or effect family, so synth pads and effects
  (88-103) are ``synth_lead``, except the choir pad (91), which is ``vocal``;
- plucked ethnic instruments (sitar, banjo, shamisen, koto: 104-107) are ``guitar``; kalimba (108)
  is ``mallet``; bagpipe and shanai (109, 111) are ``reed``; fiddle (110) is ``string``;
- the percussive programs (112-119) are ``mallet``;
- the sound effects (120-127) have little or no pitch; they get the family of what they imitate
  (fret noise: ``guitar``, breath noise and bird tweet: ``flute``, the rest: ``synth_lead``) and are
  left out of :data:`DEFAULT_PROGRAMS`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Index in each tuple = NSynth's integer id (``instrument_family``, ``instrument_source``, qualities).
NSYNTH_FAMILIES = (
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
)
NSYNTH_SOURCES = ("acoustic", "electronic", "synthetic")
NSYNTH_QUALITIES = (
    "bright",
    "dark",
    "distortion",
    "fast_decay",
    "long_release",
    "multiphonic",
    "nonlinear_env",
    "percussive",
    "reverb",
    "tempo-synced",
)


@dataclass(frozen=True)
class GMProgram:
    """One General MIDI melodic program and its NSynth labels."""

    program: int
    name: str
    family: str
    source: str

    @property
    def family_id(self) -> int:
        return NSYNTH_FAMILIES.index(self.family)

    @property
    def source_id(self) -> int:
        return NSYNTH_SOURCES.index(self.source)


_A, _E, _S = "acoustic", "electronic", "synthetic"

# (GM name, NSynth family, NSynth source) for programs 0-127, in program order.
_GM_TABLE = (
    # Piano
    ("Acoustic Grand Piano", "keyboard", _A),
    ("Bright Acoustic Piano", "keyboard", _A),
    ("Electric Grand Piano", "keyboard", _E),
    ("Honky-tonk Piano", "keyboard", _A),
    ("Electric Piano 1", "keyboard", _E),
    ("Electric Piano 2", "keyboard", _E),
    ("Harpsichord", "keyboard", _A),
    ("Clavinet", "keyboard", _E),
    # Chromatic percussion
    ("Celesta", "keyboard", _A),
    ("Glockenspiel", "mallet", _A),
    ("Music Box", "mallet", _A),
    ("Vibraphone", "mallet", _A),
    ("Marimba", "mallet", _A),
    ("Xylophone", "mallet", _A),
    ("Tubular Bells", "mallet", _A),
    ("Dulcimer", "mallet", _A),
    # Organ
    ("Drawbar Organ", "organ", _E),
    ("Percussive Organ", "organ", _E),
    ("Rock Organ", "organ", _E),
    ("Church Organ", "organ", _A),
    ("Reed Organ", "organ", _A),
    ("Accordion", "reed", _A),
    ("Harmonica", "reed", _A),
    ("Tango Accordion", "reed", _A),
    # Guitar
    ("Acoustic Guitar (nylon)", "guitar", _A),
    ("Acoustic Guitar (steel)", "guitar", _A),
    ("Electric Guitar (jazz)", "guitar", _E),
    ("Electric Guitar (clean)", "guitar", _E),
    ("Electric Guitar (muted)", "guitar", _E),
    ("Overdriven Guitar", "guitar", _E),
    ("Distortion Guitar", "guitar", _E),
    ("Guitar Harmonics", "guitar", _E),
    # Bass
    ("Acoustic Bass", "bass", _A),
    ("Electric Bass (finger)", "bass", _E),
    ("Electric Bass (pick)", "bass", _E),
    ("Fretless Bass", "bass", _E),
    ("Slap Bass 1", "bass", _E),
    ("Slap Bass 2", "bass", _E),
    ("Synth Bass 1", "bass", _S),
    ("Synth Bass 2", "bass", _S),
    # Strings
    ("Violin", "string", _A),
    ("Viola", "string", _A),
    ("Cello", "string", _A),
    ("Contrabass", "string", _A),
    ("Tremolo Strings", "string", _A),
    ("Pizzicato Strings", "string", _A),
    ("Orchestral Harp", "string", _A),
    ("Timpani", "mallet", _A),
    # Ensemble
    ("String Ensemble 1", "string", _A),
    ("String Ensemble 2", "string", _A),
    ("Synth Strings 1", "string", _S),
    ("Synth Strings 2", "string", _S),
    ("Choir Aahs", "vocal", _A),
    ("Voice Oohs", "vocal", _A),
    ("Synth Voice", "vocal", _S),
    ("Orchestra Hit", "brass", _A),
    # Brass
    ("Trumpet", "brass", _A),
    ("Trombone", "brass", _A),
    ("Tuba", "brass", _A),
    ("Muted Trumpet", "brass", _A),
    ("French Horn", "brass", _A),
    ("Brass Section", "brass", _A),
    ("Synth Brass 1", "brass", _S),
    ("Synth Brass 2", "brass", _S),
    # Reed
    ("Soprano Sax", "reed", _A),
    ("Alto Sax", "reed", _A),
    ("Tenor Sax", "reed", _A),
    ("Baritone Sax", "reed", _A),
    ("Oboe", "reed", _A),
    ("English Horn", "reed", _A),
    ("Bassoon", "reed", _A),
    ("Clarinet", "reed", _A),
    # Pipe
    ("Piccolo", "flute", _A),
    ("Flute", "flute", _A),
    ("Recorder", "flute", _A),
    ("Pan Flute", "flute", _A),
    ("Blown Bottle", "flute", _A),
    ("Shakuhachi", "flute", _A),
    ("Whistle", "flute", _A),
    ("Ocarina", "flute", _A),
    # Synth lead
    ("Lead 1 (square)", "synth_lead", _S),
    ("Lead 2 (sawtooth)", "synth_lead", _S),
    ("Lead 3 (calliope)", "synth_lead", _S),
    ("Lead 4 (chiff)", "synth_lead", _S),
    ("Lead 5 (charang)", "synth_lead", _S),
    ("Lead 6 (voice)", "synth_lead", _S),
    ("Lead 7 (fifths)", "synth_lead", _S),
    ("Lead 8 (bass + lead)", "synth_lead", _S),
    # Synth pad
    ("Pad 1 (new age)", "synth_lead", _S),
    ("Pad 2 (warm)", "synth_lead", _S),
    ("Pad 3 (polysynth)", "synth_lead", _S),
    ("Pad 4 (choir)", "vocal", _S),
    ("Pad 5 (bowed)", "synth_lead", _S),
    ("Pad 6 (metallic)", "synth_lead", _S),
    ("Pad 7 (halo)", "synth_lead", _S),
    ("Pad 8 (sweep)", "synth_lead", _S),
    # Synth effects
    ("FX 1 (rain)", "synth_lead", _S),
    ("FX 2 (soundtrack)", "synth_lead", _S),
    ("FX 3 (crystal)", "synth_lead", _S),
    ("FX 4 (atmosphere)", "synth_lead", _S),
    ("FX 5 (brightness)", "synth_lead", _S),
    ("FX 6 (goblins)", "synth_lead", _S),
    ("FX 7 (echoes)", "synth_lead", _S),
    ("FX 8 (sci-fi)", "synth_lead", _S),
    # Ethnic
    ("Sitar", "guitar", _A),
    ("Banjo", "guitar", _A),
    ("Shamisen", "guitar", _A),
    ("Koto", "guitar", _A),
    ("Kalimba", "mallet", _A),
    ("Bagpipe", "reed", _A),
    ("Fiddle", "string", _A),
    ("Shanai", "reed", _A),
    # Percussive
    ("Tinkle Bell", "mallet", _A),
    ("Agogo", "mallet", _A),
    ("Steel Drums", "mallet", _A),
    ("Woodblock", "mallet", _A),
    ("Taiko Drum", "mallet", _A),
    ("Melodic Tom", "mallet", _A),
    ("Synth Drum", "mallet", _S),
    ("Reverse Cymbal", "mallet", _S),
    # Sound effects
    ("Guitar Fret Noise", "guitar", _E),
    ("Breath Noise", "flute", _A),
    ("Seashore", "synth_lead", _S),
    ("Bird Tweet", "flute", _A),
    ("Telephone Ring", "synth_lead", _E),
    ("Helicopter", "synth_lead", _S),
    ("Applause", "synth_lead", _S),
    ("Gunshot", "synth_lead", _S),
)

GM_PROGRAMS: tuple[GMProgram, ...] = tuple(
    GMProgram(program, name, family, source) for program, (name, family, source) in enumerate(_GM_TABLE)
)

# Pitched instruments only: GM groups Piano..Ethnic. The percussive programs and sound effects
# (112-127) mostly lack a clear pitch, which a pitch-conditioned model cannot learn from.
DEFAULT_PROGRAMS = tuple(range(112))


def gm_program(program: int) -> GMProgram:
    """The :class:`GMProgram` of a General MIDI program number (0-127)."""
    if not 0 <= program < len(GM_PROGRAMS):
        raise ValueError(f"General MIDI programs are 0-127, got {program}")
    return GM_PROGRAMS[program]


def instrument_name(program: int) -> str:
    """NSynth-style instrument name of a GM program, e.g. ``"keyboard_acoustic_000"`` for 0.

    The number counts the programs of the same family across all 128 GM programs, so a program
    keeps its name whichever subset of programs a dataset is built from (which makes rebuilding
    and resuming safe), and names stay unique.
    """
    entry = gm_program(program)
    index = sum(1 for other in GM_PROGRAMS[:program] if other.family == entry.family)
    return f"{entry.family}_{entry.source}_{index:03d}"
