"""Styles of music21's bundled corpus: which collections make which style, and their instruments.

A style is a label the composer is conditioned on (``timbre compose --style palestrina``). Each one
gathers one or more collections (top-level folders) of music21's core corpus. Pieces as counted by
music21 9's metadata cache (a tune inside an ABC file counts once), after the exclusions below;
the files are counted from the corpus folder (410 Bach files, 46 quartet movements: Beethoven 22,
Mozart 15, Haydn 9). The monophonic collections are kept: a one-voice style is still a style, and
its voice count (``Voices_1``) says so.

======== =============================================== ========= =========
style    collections                                     pieces    voices (typical)
======== =============================================== ========= =========
folk     essenFolksong (Essen folksong collection)       8,545     1
irish    oneills1850 (O'Neill's Music of Ireland)        2,047     1
palestrina palestrina (mass movements, Humdrum)          1,318     4-8
fiddle   ryansMammoth (Ryan's Mammoth Collection),
         miscFolk (American fife tunes and others)       1,059+187 1
scottish airdsAirs (Aird's Airs)                         1,186     1
bach     bach (chorales and a few other works)           410       4
trecento trecento (14th-century Italian polyphony)       103       2-3
monteverdi monteverdi (madrigals, books 3-5)             48        5
quartet  beethoven, mozart, haydn string quartets        46        4
======== =============================================== ========= =========

Left out: Roman-numeral analyses (``.rntxt``: chord labels, not voices), the Josquin ABC files
(music21 reads their voices as separate one-voice tunes, so the polyphony is lost), duplicate
encodings of one movement (Humdrum beside MusicXML: the MusicXML is kept), Mozart's K. 545 (a
piano sonata among quartets), and collections of one or a few pieces (demos, exercises, single
works of single composers), too small to be styles.

Every style names General MIDI programs for its voices, highest voice first: distinct programs
keep the voices apart in the composer's single token stream (a program is a voice), and the
renderer plays each program through its learned timbre, so the choice also says how a style
sounds (strings for quartets, voices and organ for sacred polyphony, fiddle and flute for folk).
"""

from __future__ import annotations

from dataclasses import dataclass

# The style of unconditional sampling: a composer trained with style dropout learns it as "any".
ANY_STYLE = "any"


@dataclass(frozen=True)
class Style:
    """One style of the corpus.

    Attributes:
        name: the label (``--style`` value, ``Style_<name>`` token).
        collections: music21 corpus folders whose pieces belong to it.
        programs: General MIDI program of each voice, highest first; parts beyond the list
            take the last program (they merge into the lowest voice).
        description: one line for ``timbre compose --list-styles``.
    """

    name: str
    collections: tuple[str, ...]
    programs: tuple[int, ...]
    description: str


# Sacred and secular vocal polyphony: sung upper voices, organ below.
VOCAL_PROGRAMS = (52, 53, 54, 19, 20, 16, 17, 18)  # choir aahs, voice oohs, synth voice, 3 organs...

STYLES: tuple[Style, ...] = (
    Style("bach", ("bach",), (40, 41, 42, 43), "J. S. Bach's four-part chorales (strings, as composer-chorales)"),
    Style("palestrina", ("palestrina",), VOCAL_PROGRAMS, "Palestrina's mass movements, 4-8 voices"),
    Style("monteverdi", ("monteverdi",), VOCAL_PROGRAMS, "Monteverdi's five-voice madrigals"),
    Style("trecento", ("trecento",), VOCAL_PROGRAMS, "14th-century Italian polyphony (ballate, madrigals)"),
    Style("quartet", ("beethoven", "mozart", "haydn"), (40, 110, 41, 42), "Classical string quartets (vn, vn, va, vc)"),
    Style("folk", ("essenFolksong",), (73,), "European folksong melodies of the Essen collection (flute)"),
    Style("irish", ("oneills1850",), (110,), "Irish dance tunes and airs from O'Neill's collection (fiddle)"),
    Style("fiddle", ("ryansMammoth", "miscFolk"), (110,), "American fiddle and fife tunes (Ryan's Mammoth)"),
    Style("scottish", ("airdsAirs",), (72,), "Scottish airs and dances from Aird's collection (piccolo)"),
)
STYLE_NAMES: tuple[str, ...] = tuple(style.name for style in STYLES)

# Corpus paths (relative to music21's corpus) left out; see the module docstring.
EXCLUDED_SUFFIXES = (".rntxt",)
EXCLUDED_PATHS = ("mozart/k545/", "monteverdi/madrigal.3.1_old")


def style_named(name: str) -> Style:
    """The style called ``name``.

    Raises:
        KeyError: no such style (callers turn it into their own error).
    """
    for style in STYLES:
        if style.name == name:
            return style
    raise KeyError(name)


def style_of_collection(collection: str) -> Style | None:
    """The style a corpus folder belongs to, or None when it is left out."""
    for style in STYLES:
        if collection in style.collections:
            return style
    return None
