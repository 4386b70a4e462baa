"""Speakers for the speech corpus: real offline synthesizers plus signal-level speaker augmentation.

Base voices (Debian main): flite's CMU ARCTIC voices, festival's diphone and HTS voices for
English; espeak-ng's cmn-latn-pinyin voice (fed tone-numbered pinyin) with voice variants for
Mandarin. Each base voice is multiplied into several speakers by pitch (semitones) and tempo
shifts with sox, so the corpus has >= 20 English and >= 8 Mandarin speakers.

Extra English voices from Debian's contrib/non-free sections (RHVoice, MBROLA through espeak-ng,
SVOX Pico) join only when asked for (`extra=True`), so a default build is the same on every
machine; README "Extra voices" gives the steps to install them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from unimoe_audio.data.text import pinyin_tones
from unimoe_audio.errors import UniMoEError


@dataclass(frozen=True)
class BaseVoice:
    name: str
    language: str  # "en" | "zh"
    engine: str  # "flite" | "festival" | "espeak" | "rhvoice" | "pico"
    voice: str
    package: str = ""  # the Debian package that provides it (extra voices)


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
    BaseVoice("cmnM1", "zh", "espeak", "cmn-latn-pinyin+m1"),
    BaseVoice("cmnF2", "zh", "espeak", "cmn-latn-pinyin+f2"),
    BaseVoice("cmnM3", "zh", "espeak", "cmn-latn-pinyin+m3"),
    BaseVoice("cmnF4", "zh", "espeak", "cmn-latn-pinyin+f4"),
)
EXTRA_VOICES = (
    *(BaseVoice(f"rh{v.capitalize()}", "en", "rhvoice", v, "rhvoice-english") for v in ("alan", "bdl", "clb", "slt")),
    *(BaseVoice(f"mb{v.capitalize()}", "en", "espeak", f"mb-{v}", f"mbrola-{v}") for v in ("us1", "us2", "us3", "en1")),
    BaseVoice("picoUS", "en", "pico", "en-US", "libttspico-utils"),
    BaseVoice("picoGB", "en", "pico", "en-GB", "libttspico-utils"),
)
MBROLA_DIR = Path("/usr/share/mbrola")
# (pitch semitones, tempo) variants applied to every base voice.
AUGMENTATIONS = ((0.0, 1.0), (-2.0, 0.95), (2.0, 1.05))
REQUIRED_TOOLS = {"flite": "flite", "text2wave": "festival", "espeak-ng": "espeak-ng", "sox": "sox"}  # -> Debian package


def speakers(language: str, extra: bool = False) -> list[Speaker]:
    voices = BASE_VOICES + (EXTRA_VOICES if extra else ())
    return [Speaker(v, p, t) for v in voices if v.language == language for p, t in AUGMENTATIONS]


def check_tools(extra: bool = False) -> None:
    """Raise naming the Debian packages to install when a synthesizer is missing."""
    missing = sorted({package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise UniMoEError(f"missing Debian packages for speech synthesis: {' '.join(missing)}; "
                          "run scripts/install-system.sh (make install)")
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
    return (MBROLA_DIR / voice.voice[3:]).is_dir()  # espeak-ng's mb-<name> voice reads this database


def _run(cmd: list[str], **kw) -> None:
    result = subprocess.run(cmd, capture_output=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='ignore')[-300:]}")


def synthesize(speaker: Speaker, text: str, out: Path, sample_rate: int = 16_000) -> None:
    """Speak `text` with `speaker` into a 16-bit mono wav at `sample_rate` (raises RuntimeError)."""
    base = speaker.base
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if base.engine == "flite":
            _run(["flite", "-voice", base.voice, "-t", text, "-o", str(raw)])
        elif base.engine == "festival":
            _run(["text2wave", "-eval", f"({base.voice})", "-o", str(raw)], input=text.encode())
        elif base.engine == "rhvoice":
            _run(["RHVoice-test", "-p", base.voice, "-o", str(raw)], input=text.encode())
        elif base.engine == "pico":
            _run(["pico2wave", "-l", base.voice, "-w", str(raw), text])
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
