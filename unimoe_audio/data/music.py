"""Music for the corpus: real compositions from music21's bundled corpus rendered with FluidSynth.

Each item is one composition with rendering choices drawn from a seeded RNG: General-MIDI
instruments per part, tempo, transposition and excerpt. The caption is written from the
score's metadata and those choices (composer/era/genre, instruments, BPM, key and mode, metre,
texture) with several templates so the wording varies. With `video=`, the clip also gets a video
drawn from the same notes, beats, phrases and key (data/videos.py) and a second caption for
video-to-music that leaves tempo and key to the video.
"""

from __future__ import annotations

import glob
import os
import random
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimoe_audio.data.videos import Timeline, render_video

FLUID_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RENDER_TIMEOUT_S = 20  # a normal piece renders in about a second
RELEASE_SECONDS = 3.0  # rendered past the score's last note, for the instruments' release


@dataclass(frozen=True)
class Source:
    """A family of compositions: how to find them and how to describe them."""

    name: str
    pattern: str  # glob under music21's corpus folder (** reaches into subfolders)
    composer: str
    era: str
    genre: str
    collection: bool  # ABC files holding many tunes, each parsed alone with number= (whole files are slow)
    instruments: tuple[tuple[int, str], ...]  # GM program (0-based), name


ENSEMBLE = ((0, "piano"), (19, "church organ"), (48, "string ensemble"), (40, "violin"), (42, "cello"),
            (73, "flute"), (71, "clarinet"), (70, "bassoon"), (60, "french horn"), (52, "choir"), (24, "nylon guitar"),
            (46, "harp"))
MELODY = ((73, "flute"), (40, "violin"), (22, "harmonica"), (71, "clarinet"), (0, "piano"), (109, "bagpipe"),
          (104, "sitar"), (77, "shakuhachi"), (75, "pan flute"), (11, "vibraphone"), (105, "banjo"), (68, "oboe"))
SOURCES = (
    Source("bach", "bach/bwv*.mxl", "Johann Sebastian Bach", "Baroque", "chorale", False, ENSEMBLE),
    Source("palestrina", "palestrina/*.krn", "Giovanni Pierluigi da Palestrina", "Renaissance", "sacred polyphony", False,
           ENSEMBLE),
    Source("beethoven", "beethoven/**/*.mxl", "Ludwig van Beethoven", "Classical", "string quartet movement", False,
           ENSEMBLE),
    Source("mozart", "mozart/**/*.mxl", "Wolfgang Amadeus Mozart", "Classical", "chamber music movement", False, ENSEMBLE),
    Source("han", "essenFolksong/han*.abc", "traditional", "Chinese", "Han folk song", True, MELODY),
    Source("irish", "ryansMammoth/*.abc", "traditional", "Irish and Scottish", "fiddle tune", False, MELODY),
    Source("oneills", "oneills1850/*.abc", "traditional", "Irish", "dance tune from O'Neill's collection", True, MELODY),
    Source("aird", "airdsAirs/*.abc", "traditional", "Scottish", "air from Aird's collection", True, MELODY),
)
MUSIC_LICENCE = "music21 corpus encoding (terms: music21/corpus/license.txt); composition in the public domain"
MAX_MEASURES = 32  # longer scores are cut to a random window first, so that rendering stays fast
TEMPLATES = (
    "A {genre} by {composer} ({era}), played on {instruments} at {bpm} BPM in {key}, {metre} time, {texture}.",
    "{Texture} {era} {genre} in {key} for {instruments}; {metre} metre, around {bpm} beats per minute.",
    "{instruments_cap} perform a {genre} ({composer}) in {key} at a tempo of {bpm} BPM, {metre} time.",
    "{era} music: {genre}, {key}, {bpm} BPM, {metre}, {texture}, scored for {instruments}.",
)
# v2m captions: what the video does not show (tempo, beats and key are the video's to give)
VIDEO_TEMPLATES = (
    "Music for this video: a {genre} by {composer} ({era}) on {instruments}, {texture}.",
    "{Texture} {era} {genre} for {instruments} that follows the video.",
    "Score the video with {instruments}: a {genre} ({composer}), {metre} time.",
)
PHRASE_BARS = 4  # a video cut at every phrase of this many bars


def corpus_root() -> Path:
    import music21

    return Path(os.path.dirname(music21.__file__)) / "corpus"


def list_pieces(source: Source) -> list[tuple[str, int | None]]:
    """(path, tune number or None) for every composition of a source, in a stable order."""
    files = sorted(glob.glob(str(corpus_root() / source.pattern), recursive=True))
    if not source.collection:
        return [(f, None) for f in files]
    tunes = []
    for f in files:
        numbers = re.findall(r"^X:\s*(\d+)", Path(f).read_text(encoding="latin-1"), flags=re.M)
        tunes += [(f, n) for n in dict.fromkeys(int(x) for x in numbers)]
    return tunes


def _fluidsynth(midi: Path, raw: Path, sample_rate: int, seconds: float, name: str) -> np.ndarray:
    """Render `midi` to mono float32 samples, stopping after `seconds`: some scores leave a note on
    that FluidSynth would otherwise render for ever."""
    wanted = int(seconds * sample_rate) * 4  # raw output: 16-bit stereo frames
    log = raw.with_suffix(".log")
    with log.open("wb") as err:
        proc = subprocess.Popen(["fluidsynth", "-ni", "-g", "0.7", "-T", "raw", "-O", "s16", "-F", str(raw),
                                 "-r", str(sample_rate), str(FLUID_SOUNDFONT), str(midi)],
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while proc.poll() is None and not (raw.is_file() and raw.stat().st_size >= wanted):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"fluidsynth did not render {name} within {RENDER_TIMEOUT_S} s")
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    elif proc.returncode != 0:
        raise RuntimeError(f"fluidsynth failed on {name}: {log.read_text(errors='ignore')[-200:]}")
    proc.wait()
    if not raw.is_file():
        raise RuntimeError(f"fluidsynth wrote nothing for {name}: {log.read_text(errors='ignore')[-200:]}")
    frames = np.fromfile(raw, dtype="<i2")[: wanted // 2]
    frames = frames[: len(frames) // 2 * 2].reshape(-1, 2)
    return frames.astype(np.float32).mean(axis=1) / 32768


def _timeline(score, bpm: int, key, clip_start: float, duration: float) -> Timeline:
    """Notes, beats and phrase boundaries of `score` in seconds from the clip's first sample, where
    the clip starts `clip_start` seconds after the score's first note (the render's first sound)."""
    import music21

    beat = 60 / bpm  # one quarter note: the MetronomeMark's referent
    notes = [(float(n.offset), float(n.offset + n.quarterLength), p.midi) for n in score.flatten().notes for p in n.pitches]
    origin = min(start for start, _, _ in notes) * beat + clip_start
    end = max(stop for _, stop, _ in notes)
    measures = score.parts[0].getElementsByClass(music21.stream.Measure) if score.parts else []
    bars = [float(m.offset) for m in measures][PHRASE_BARS::PHRASE_BARS]
    return Timeline(duration=duration,
                    notes=tuple((a * beat - origin, b * beat - origin, pitch) for a, b, pitch in notes
                                if b * beat - origin > 0 and a * beat - origin < duration),
                    beats=tuple(k * beat - origin for k in range(int(np.ceil(end)) + 1) if 0 <= k * beat - origin < duration),
                    phrases=tuple(b * beat - origin for b in bars if 0 < b * beat - origin < duration),
                    tonic=key.tonic.pitchClass, mode=key.mode)


def render_music(source: Source, path: str, number: int | None, seed: int, out: Path,
                 sample_rate: int = 16_000, min_seconds: float = 5.0, max_seconds: float = 15.0,
                 video: Path | None = None) -> dict:
    """Render one composition to `out` (16-bit mono wav); return its caption and attributes.
    With `video`, also draw the clip's video there and return its v2m caption (`video_caption`).

    Raises RuntimeError for scores that cannot be parsed or rendered (the builder skips them).
    """
    import music21
    import soundfile as sf

    rng = random.Random(seed)
    try:
        score = music21.converter.parse(path, number=number) if number else music21.converter.parse(path)
    except Exception as err:  # music21 raises many types for malformed scores
        raise RuntimeError(f"music21 cannot parse {Path(path).name} #{number}: {err}") from None
    measures = len(score.parts[0].getElementsByClass(music21.stream.Measure)) if score is not None and score.parts else 0
    if measures > MAX_MEASURES:
        first = rng.randrange(1, measures - MAX_MEASURES + 2)
        score = score.measures(first, first + MAX_MEASURES - 1)
        for measure in score.recurse().getElementsByClass(music21.stream.Measure):  # a cut leaves repeats unpaired
            for side in ("leftBarline", "rightBarline"):
                if isinstance(getattr(measure, side), music21.bar.Repeat):
                    setattr(measure, side, None)
        for note in score.recurse().notes:  # and ties that never end (FluidSynth would render forever)
            note.tie = None
    if score is None or not score.flatten().pitches:
        where = " in the excerpt" if measures > MAX_MEASURES else ""
        raise RuntimeError(f"{Path(path).name} #{number} has no pitched notes{where}")
    semitones = rng.choice((-3, -2, 0, 0, 2, 3))
    if semitones:
        score = score.transpose(semitones)
    try:
        key = score.analyze("key")
    except music21.analysis.discrete.DiscreteAnalysisException as err:
        raise RuntimeError(f"no key found for {Path(path).name} #{number}: {err}") from None
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
        midi = Path(tmp) / "a.mid"
        try:
            score.write("midi", fp=str(midi))
        except Exception as err:  # e.g. badly formed repeats
            raise RuntimeError(f"music21 cannot write MIDI for {Path(path).name} #{number}: {err}") from None
        seconds = float(score.highestTime) * 60 / bpm + RELEASE_SECONDS
        audio = _fluidsynth(midi, Path(tmp) / "a.raw", sample_rate, seconds, f"{Path(path).name} #{number}")
    voiced = np.flatnonzero(np.abs(audio) > 1e-3)
    if len(voiced) == 0 or (voiced[-1] - voiced[0]) / sample_rate < min_seconds:
        raise RuntimeError(f"{Path(path).name} #{number} renders shorter than {min_seconds} s")
    audio = audio[voiced[0]: voiced[-1] + 1]
    length = min(len(audio), int(rng.uniform(min_seconds, max_seconds) * sample_rate))
    start = rng.randrange(0, len(audio) - length + 1) if rng.random() < 0.5 else 0
    audio = audio[start: start + length]
    audio = 0.9 * audio / max(np.abs(audio).max(), 1e-6)
    sf.write(str(out), audio, sample_rate, subtype="PCM_16", format="WAV")
    if video is not None:
        render_video(_timeline(score, bpm, key, start / sample_rate, len(audio) / sample_rate), video)

    unique = list(dict.fromkeys(instruments))
    inst_text = unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]
    texture = "a solo melody" if len(parts) == 1 else f"{len(parts)}-part polyphony"
    key_text = f"{key.tonic.name.replace('-', ' flat')} {key.mode}"
    fields = dict(genre=source.genre, composer=source.composer, era=source.era, instruments=inst_text,
                  instruments_cap=inst_text[0].upper() + inst_text[1:], bpm=bpm, key=key_text, metre=metre,
                  texture=texture, Texture=texture[0].upper() + texture[1:])
    caption = rng.choice(TEMPLATES).format(**fields)
    extra = {"video_caption": rng.choice(VIDEO_TEMPLATES).format(**fields)} if video is not None else {}
    return {**extra, "caption": caption, "bpm": bpm, "key": key_text, "metre": metre, "instruments": unique,
            "parts": len(parts), "source": source.name, "piece": f"{Path(path).name}#{number or 1}",
            "transpose": semitones, "duration": round(len(audio) / sample_rate, 3)}
