"""Text front-end: phonemes for speech, characters for captions, special tokens for the format.

English text -> espeak-ng IPA (`espeak-ng -q --ipa -v en-us`), Mandarin -> tone-numbered pinyin
(pypinyin, "ni3 hao3"), captions -> lower-cased characters. Every sequence is made of symbols
from one vocabulary: the special tokens below, one token per built-in speaker, then the symbols
seen when the front-end was fitted on a corpus (plus printable ASCII), so the file saved with
the model (`frontend.json`) fixes the mapping for good. A front-end fitted on a corpus with
video-to-music items appends VIDEO_SPECIALS after everything else, so front-ends (and models)
made before video existed keep every id.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import string
import subprocess
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from unimoe_audio.data.schema import LANGUAGES
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import write_json

SPECIALS = ("<pad>", "<unk>", "<bos>", "<audio>", "<tts>", "<clone>", "<t2m>", "<en>", "<zh>",
            "<text>", "</text>", "<caption>", "</caption>", "<prompt>", "</prompt>")
VIDEO_SPECIALS = ("<v2m>", "<video>", "</video>", "<frame>")  # <frame>: a position holding a vision token
BASE_SYMBOLS = string.ascii_lowercase + string.digits + " .,;:!?'-"
MANDARIN_DIGITS = str.maketrans("0123456789", "零一二三四五六七八九")
UNKNOWN_LIMIT = 0.1  # a text or caption with more than this share of symbols the front-end never saw is refused


@functools.lru_cache(maxsize=65536)
def english_ipa(text: str) -> str:
    if shutil.which("espeak-ng") is None:
        raise UniMoEError("espeak-ng is not installed; run `make install` (Debian package espeak-ng)")
    out = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", "--", text], capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise UniMoEError(f"espeak-ng failed on {text!r}: {out.stderr.strip()}")
    # One line per clause; the zero-width joiners only tie diphthongs for display.
    return " , ".join(line.strip() for line in out.stdout.replace("\u200d", "").splitlines() if line.strip())


def mandarin_pinyin(text: str) -> str:
    """Tone-numbered pinyin. Digits are read one by one (2024 -> 二零二四), punctuation and spaces
    are pauses; anything else (Latin letters, symbols) is refused, naming it, never dropped."""
    from pypinyin import Style, lazy_pinyin

    text = unicodedata.normalize("NFKC", text).translate(MANDARIN_DIGITS)
    foreign: list[str] = []

    def not_chinese(run: str) -> list[str]:
        foreign.extend(ch for ch in run if not (ch.isspace() or unicodedata.category(ch).startswith("P")))
        return []

    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, errors=not_chinese)
    if foreign:
        raise UniMoEError(f"cannot read {text!r} as Mandarin: {' '.join(dict.fromkeys(foreign))} "
                          "are not Chinese characters, digits or punctuation; write them in Chinese characters")
    return " ".join(s for s in syllables if s.strip())


def phonemize(text: str, language: str) -> str:
    if language not in LANGUAGES:
        raise UniMoEError(f"language must be one of {LANGUAGES}, got {language!r}")
    if not text or not text.strip():
        raise UniMoEError("the text to speak is empty")
    return english_ipa(text.strip()) if language == "en" else mandarin_pinyin(text.strip())


class TextFrontend:
    """Symbol vocabulary and the conversion of text, captions and speakers to token ids."""

    def __init__(self, symbols: list[str], speakers: list[str], speaker_languages: dict[str, list[str]] | None = None,
                 video: bool = False):
        self.speakers = list(speakers)
        self.speaker_languages = dict(speaker_languages or {})  # speaker -> the languages it spoke (empty if unknown)
        self.symbols = list(symbols)
        self.video = video
        self.vocab = [*SPECIALS, *(f"<spk:{s}>" for s in self.speakers), *self.symbols, *(VIDEO_SPECIALS if video else ())]
        self.ids = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise UniMoEError("the front-end vocabulary has duplicate entries")

    def __len__(self) -> int:
        return len(self.vocab)

    def __getitem__(self, token: str) -> int:
        return self.ids[token]

    @classmethod
    def fit(cls, entries: list[dict]) -> "TextFrontend":
        """Vocabulary from corpus manifest entries (their texts, captions and speakers)."""
        seen = set(BASE_SYMBOLS)
        spoken = {(e[key], e["language"]) for e in entries for key in ("text", "prompt_text") if e.get(key)}
        # One espeak-ng process per English sentence: mostly waiting, so threads run them side by side.
        with ThreadPoolExecutor(max_workers=4 * (os.cpu_count() or 1)) as pool:
            for phonemes in pool.map(lambda pair: phonemize(*pair), sorted(spoken)):
                seen.update(phonemes)
        speakers: dict[str, set[str]] = {}
        for e in entries:
            if e.get("caption"):
                seen.update(e["caption"].lower())
            if e.get("speaker"):
                speakers.setdefault(e["speaker"], set()).update([e["language"]] if e.get("language") else [])
        return cls(sorted(seen), sorted(speakers), {s: sorted(langs) for s, langs in speakers.items() if langs},
                   video=any(e["task"] == "v2m" for e in entries))

    def _symbols(self, text: str, what: str) -> list[int]:
        """Ids of `text`'s symbols; refused when more than UNKNOWN_LIMIT of them are unknown."""
        unknown = [ch for ch in text if ch not in self.ids]
        if len(unknown) > UNKNOWN_LIMIT * len(text):
            raise UniMoEError(f"cannot read {what}: {len(unknown)} of its {len(text)} symbols are unknown to this model "
                              f"({' '.join(dict.fromkeys(unknown))})")
        unk = self.ids["<unk>"]
        return [self.ids.get(ch, unk) for ch in text]

    def speech_text(self, text: str, language: str) -> list[int]:
        """<text> phonemes </text>; an empty `text` gives the unconditional form."""
        body = []
        if text:
            phonemes = phonemize(text, language)
            if not [ch for ch in phonemes if not ch.isspace() and ch not in ",."]:
                raise UniMoEError(f"cannot read {text!r} as {language} speech: nothing in it can be spoken")
            body = self._symbols(phonemes, f"{text!r} as {language} speech (phonemes {phonemes!r})")
        return [self.ids["<text>"], *body, self.ids["</text>"]]

    def caption(self, caption: str) -> list[int]:
        text = caption.lower().strip()
        return [self.ids["<caption>"], *self._symbols(text, f"the caption {caption!r}"), self.ids["</caption>"]]

    def speaker(self, name: str, language: str | None = None) -> int:
        """The speaker's token; refused when the speaker is unknown or never spoke `language`."""
        token = f"<spk:{name}>"
        if token not in self.ids:
            known = ", ".join(self.speakers[:12]) + (" …" if len(self.speakers) > 12 else "")
            raise UniMoEError(f"unknown speaker {name!r}; this model knows: {known}")
        spoke = self.speaker_languages.get(name)
        if language is not None and spoke and language not in spoke:
            raise UniMoEError(f"speaker {name!r} speaks {', '.join(spoke)}, not {language}; choose one of "
                              f"{', '.join(s for s in self.speakers if language in self.speaker_languages.get(s, ()))[:200]}")
        return self.ids[token]

    def save(self, path: Path) -> None:
        write_json(path, {"symbols": self.symbols, "speakers": self.speakers, "speaker_languages": self.speaker_languages,
                          **({"video": True} if self.video else {})})

    @classmethod
    def load(cls, path: Path) -> "TextFrontend":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["symbols"], data["speakers"], data.get("speaker_languages"),  # older files: no languages
                       data.get("video", False))  # nor video
        except (OSError, ValueError, KeyError) as err:
            raise UniMoEError(f"cannot read the text front-end {path}: {err}") from None
