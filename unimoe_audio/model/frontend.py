"""Text front-end: phonemes for speech, characters for captions, special tokens for the format.

English text -> espeak-ng IPA (`espeak-ng -q --ipa -v en-us`), Mandarin -> tone-numbered pinyin
(pypinyin, "ni3 hao3"), captions -> lower-cased characters. Every sequence is made of symbols
from one vocabulary: the special tokens below, one token per built-in speaker, then the symbols
seen when the front-end was fitted on a corpus (plus printable ASCII), so the file saved with
the model (`frontend.json`) fixes the mapping for good.
"""

from __future__ import annotations

import functools
import json
import shutil
import string
import subprocess
from pathlib import Path

from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import write_json

LANGUAGES = ("en", "zh")
TASKS = ("tts", "clone", "t2m")
SPECIALS = ("<pad>", "<unk>", "<bos>", "<audio>", "<tts>", "<clone>", "<t2m>", "<en>", "<zh>",
            "<text>", "</text>", "<caption>", "</caption>", "<prompt>", "</prompt>")
BASE_SYMBOLS = string.ascii_lowercase + string.digits + " .,;:!?'-"


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
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True, errors="ignore")
    return " ".join(s for s in syllables if s.strip())


def phonemize(text: str, language: str) -> str:
    if language not in LANGUAGES:
        raise UniMoEError(f"language must be one of {LANGUAGES}, got {language!r}")
    if not text or not text.strip():
        raise UniMoEError("the text to speak is empty")
    return english_ipa(text.strip()) if language == "en" else mandarin_pinyin(text.strip())


class TextFrontend:
    """Symbol vocabulary and the conversion of text, captions and speakers to token ids."""

    def __init__(self, symbols: list[str], speakers: list[str]):
        self.speakers = list(speakers)
        self.symbols = list(symbols)
        self.vocab = [*SPECIALS, *(f"<spk:{s}>" for s in self.speakers), *self.symbols]
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
        speakers = set()
        for e in entries:
            if e.get("text"):
                seen.update(phonemize(e["text"], e["language"]))
            if e.get("prompt_text"):
                seen.update(phonemize(e["prompt_text"], e["language"]))
            if e.get("caption"):
                seen.update(e["caption"].lower())
            if e.get("speaker"):
                speakers.add(e["speaker"])
        return cls(sorted(seen), sorted(speakers))

    def _symbols(self, text: str) -> list[int]:
        unk = self.ids["<unk>"]
        return [self.ids.get(ch, unk) for ch in text]

    def speech_text(self, text: str, language: str) -> list[int]:
        """<text> phonemes </text>; an empty `text` gives the unconditional form."""
        body = []
        if text:
            phonemes = phonemize(text, language)
            body = self._symbols(phonemes)
            unknown = sum(i == self.ids["<unk>"] for i in body)
            spoken = [ch for ch in phonemes if not ch.isspace() and ch not in ",."]
            if not spoken or unknown > len(body) // 2:
                raise UniMoEError(f"cannot read {text!r} as {language} speech: the front-end knows "
                                  f"{len(body) - unknown} of its {len(body)} symbols")
        return [self.ids["<text>"], *body, self.ids["</text>"]]

    def caption(self, caption: str) -> list[int]:
        return [self.ids["<caption>"], *self._symbols(caption.lower().strip()), self.ids["</caption>"]]

    def speaker(self, name: str) -> int:
        token = f"<spk:{name}>"
        if token not in self.ids:
            known = ", ".join(self.speakers[:12]) + (" …" if len(self.speakers) > 12 else "")
            raise UniMoEError(f"unknown speaker {name!r}; this model knows: {known}")
        return self.ids[token]

    def save(self, path: Path) -> None:
        write_json(path, {"symbols": self.symbols, "speakers": self.speakers})

    @classmethod
    def load(cls, path: Path) -> "TextFrontend":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["symbols"], data["speakers"])
        except (OSError, ValueError, KeyError) as err:
            raise UniMoEError(f"cannot read the text front-end {path}: {err}") from None
