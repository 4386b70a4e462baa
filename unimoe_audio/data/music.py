"""Music for the corpus: real compositions from music21's bundled corpus rendered with FluidSynth.

Each item is one composition with rendering choices drawn from a seeded RNG: General-MIDI
instruments per part, tempo, transposition and excerpt. The caption is written from the
score's metadata and those choices (composer/era/genre, instruments, BPM, key and mode, metre,
texture) with several templates so the wording varies.
"""

from __future__ import annotations

import glob
import os
import random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLUID_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RENDER_TIMEOUT_S = 20  # a normal piece renders in about a second


@dataclass(frozen=True)
class Source:
    """A family of compositions: how to find them and how to describe them."""

    name: str
    pattern: str  # glob under music21's corpus folder
    composer: str
    era: str
    genre: str
    per_file: int  # tunes per file (ABC collections hold many; parse with number=)
    instruments: tuple[tuple[int, str], ...]  # GM program (0-based), name


ENSEMBLE = ((0, "piano"), (19, "church organ"), (48, "string ensemble"), (40, "violin"), (42, "cello"),
            (73, "flute"), (71, "clarinet"), (70, "bassoon"), (60, "french horn"), (52, "choir"), (24, "nylon guitar"),
            (46, "harp"))
MELODY = ((73, "flute"), (40, "violin"), (22, "harmonica"), (71, "clarinet"), (0, "piano"), (109, "bagpipe"),
          (104, "sitar"), (77, "shakuhachi"), (75, "pan flute"), (11, "vibraphone"), (105, "banjo"), (68, "oboe"))
SOURCES = (
    Source("bach", "bach/bwv*.mxl", "Johann Sebastian Bach", "Baroque", "chorale", 1, ENSEMBLE),
    Source("palestrina", "palestrina/*.krn", "Giovanni Pierluigi da Palestrina", "Renaissance", "sacred polyphony", 1, ENSEMBLE),
    Source("han", "essenFolksong/han*.abc", "traditional", "Chinese", "Han folk song", 50, MELODY),
    Source("irish", "ryansMammoth/*.abc", "traditional", "Irish and Scottish", "fiddle tune", 1, MELODY),
)
TEMPLATES = (
    "A {genre} by {composer} ({era}), played on {instruments} at {bpm} BPM in {key}, {metre} time, {texture}.",
    "{Texture} {era} {genre} in {key} for {instruments}; {metre} metre, around {bpm} beats per minute.",
    "{instruments_cap} perform a {genre} ({composer}) in {key} at a tempo of {bpm} BPM, {metre} time.",
    "{era} music: {genre}, {key}, {bpm} BPM, {metre}, {texture}, scored for {instruments}.",
)


def corpus_root() -> Path:
    import music21

    return Path(os.path.dirname(music21.__file__)) / "corpus"


def list_pieces(source: Source) -> list[tuple[str, int | None]]:
    """(path, tune number or None) for every composition of a source, in a stable order."""
    files = sorted(glob.glob(str(corpus_root() / source.pattern)))
    if source.per_file == 1:
        return [(f, None) for f in files]
    return [(f, n) for f in files for n in range(1, source.per_file + 1)]


def render_music(source: Source, path: str, number: int | None, seed: int, out: Path,
                 sample_rate: int = 16_000, min_seconds: float = 5.0, max_seconds: float = 15.0) -> dict:
    """Render one composition to `out` (16-bit mono wav); return its caption and attributes.

    Raises RuntimeError for scores that cannot be parsed or rendered (the builder skips them).
    """
    import music21
    import soundfile as sf

    rng = random.Random(seed)
    try:
        score = music21.converter.parse(path, number=number) if number else music21.converter.parse(path)
    except Exception as err:  # music21 raises many types for malformed scores
        raise RuntimeError(f"music21 cannot parse {Path(path).name} #{number}: {err}") from None
    if score is None or not score.flatten().notes:
        raise RuntimeError(f"{Path(path).name} #{number} has no notes")
    semitones = rng.choice((-3, -2, 0, 0, 2, 3))
    if semitones:
        score = score.transpose(semitones)
    key = score.analyze("key")
    bpm = rng.choice((60, 72, 84, 96, 108, 120, 132, 144))
    parts = list(score.parts) or [score]
    instruments = []
    for part in parts:
        program, name = rng.choice(source.instruments)
        instruments.append(name)
        for old in part.recurse().getElementsByClass(music21.instrument.Instrument):
            old.activeSite.remove(old)
        for old in part.recurse().getElementsByClass(music21.tempo.MetronomeMark):
            old.activeSite.remove(old)
        inst = music21.instrument.instrumentFromMidiProgram(program)
        inst.midiChannel = None
        part.insert(0, inst)
    parts[0].insert(0, music21.tempo.MetronomeMark(number=bpm))
    ts = score.recurse().getElementsByClass(music21.meter.TimeSignature).first()
    metre = ts.ratioString if ts else "4/4"
    with tempfile.TemporaryDirectory() as tmp:
        midi, wav = Path(tmp) / "a.mid", Path(tmp) / "a.wav"
        try:
            score.write("midi", fp=str(midi))
        except Exception as err:  # e.g. badly formed repeats
            raise RuntimeError(f"music21 cannot write MIDI for {Path(path).name} #{number}: {err}") from None
        try:  # a note that never ends makes fluidsynth render forever (gigabytes of wav): give up
            result = subprocess.run(["fluidsynth", "-ni", "-g", "0.7", "-F", str(wav), "-r", str(sample_rate),
                                     str(FLUID_SOUNDFONT), str(midi)], capture_output=True, timeout=RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"fluidsynth did not finish {Path(path).name} #{number} within {RENDER_TIMEOUT_S} s") from None
        if result.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed on {Path(path).name}: {result.stderr.decode(errors='ignore')[-200:]}")
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    voiced = np.flatnonzero(np.abs(audio) > 1e-3)
    if len(voiced) == 0 or (voiced[-1] - voiced[0]) / rate < min_seconds:
        raise RuntimeError(f"{Path(path).name} #{number} renders shorter than {min_seconds} s")
    audio = audio[voiced[0]: voiced[-1] + 1]
    length = min(len(audio), int(rng.uniform(min_seconds, max_seconds) * rate))
    start = rng.randrange(0, len(audio) - length + 1) if rng.random() < 0.5 else 0
    audio = audio[start: start + length]
    audio = 0.9 * audio / max(np.abs(audio).max(), 1e-6)
    sf.write(str(out), audio, rate, subtype="PCM_16", format="WAV")

    unique = list(dict.fromkeys(instruments))
    inst_text = unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]
    texture = "a solo melody" if len(parts) == 1 else f"{len(parts)}-part polyphony"
    key_text = f"{key.tonic.name.replace('-', ' flat')} {key.mode}"
    fields = dict(genre=source.genre, composer=source.composer, era=source.era, instruments=inst_text,
                  instruments_cap=inst_text[0].upper() + inst_text[1:], bpm=bpm, key=key_text, metre=metre,
                  texture=texture, Texture=texture[0].upper() + texture[1:])
    caption = rng.choice(TEMPLATES).format(**fields)
    return {"caption": caption, "bpm": bpm, "key": key_text, "metre": metre, "instruments": unique,
            "parts": len(parts), "source": source.name, "piece": f"{Path(path).name}#{number or 1}",
            "transpose": semitones, "duration": round(len(audio) / rate, 3)}
