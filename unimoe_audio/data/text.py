"""Sentence sources for the speech corpus: Debian `fortunes` (English) and `fortunes-zh` (Mandarin).

English text is normalised the way a TTS front-end needs it: numbers and common abbreviations
spelled out, symbols removed, 3–20 words. Mandarin text has its ANSI colour codes stripped and
is split into short phrases of Chinese characters only.
"""

from __future__ import annotations

import re
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
ENGLISH_FILES = ("fortunes", "literature", "people", "wisdom", "science", "humorists", "work", "education",
                 "computers", "politics", "art", "food", "love", "miscellaneous", "platitudes", "riddles")
CHINESE_FILES = ("chinese.u8", "tang300.u8", "song100.u8")

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "dr.": "doctor", "st.": "saint", "vs.": "versus",
                  "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is", "jr.": "junior", "no.": "number"}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "$": " dollars "}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HAN = re.compile(r"[\u4e00-\u9fff]+")


def number_to_words(n: int) -> str:
    """Cardinal number in English words (0 <= n < 10^12)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_to_words(n // size) + f" {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise ValueError(n)


def normalize_english(text: str) -> str | None:
    """Spoken form of one sentence, or None when it cannot be read aloud cleanly."""
    text = " ".join(text.split())
    if re.search(r"://|www\.|@", text):  # URLs and e-mail addresses cannot be read aloud cleanly
        return None
    words = []
    for word in text.split(" "):
        low = word.lower()
        words.append(_ABBREVIATIONS.get(low, word))
    text = " ".join(words)
    text = re.sub(r"\$(\d+)", r"\1 dollars", text)
    for sym, spoken in _SYMBOLS.items():
        text = text.replace(sym, spoken)
    text = re.sub(r"\d{1,12}", lambda m: " " + number_to_words(int(m.group())) + " ", text)
    text = re.sub(r"[\"()\[\]{}*_/\\|<>#~^`]", " ", text)
    text = re.sub(r"\s*--+\s*", ", ", text)
    text = re.sub(r"\s+([,.;:?!])", r"\1", " ".join(text.split())).strip(" ,;:-")
    if not re.fullmatch(r"[A-Za-z][A-Za-z ,.;:'?!-]*", text) or re.search(r"[A-Za-z]\.[A-Za-z]", text):
        return None
    n_words = len(text.split())
    if not 3 <= n_words <= 20:
        return None
    return text if text[-1] in ".?!" else text + "."


def _split_sentences(block: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+", " ".join(block.split())) if s.strip()]


def english_sentences(root: Path = FORTUNES) -> list[str]:
    """Unique normalised sentences from the English fortune files, in a stable order."""
    seen, out = set(), []
    for name in ENGLISH_FILES:
        path = root / name
        if not path.is_file():
            continue
        for block in path.read_text(encoding="latin-1").split("\n%\n"):
            if re.search(r"^\s*--", block, flags=re.M):  # drop attributions
                block = re.split(r"\n\s*--", block)[0]
            for sentence in _split_sentences(block):
                text = normalize_english(sentence)
                if text and text.lower() not in seen:
                    seen.add(text.lower())
                    out.append(text)
    return out


def mandarin_phrases(root: Path = FORTUNES, min_chars: int = 4, max_chars: int = 16) -> list[str]:
    """Unique phrases of 4–16 Chinese characters (punctuation splits phrases), in a stable order."""
    seen, out = set(), []
    for name in CHINESE_FILES:
        path = root / name
        if not path.is_file():
            continue
        text = _ANSI.sub("", path.read_text(encoding="utf-8", errors="ignore"))
        for phrase in _HAN.findall(text):
            if min_chars <= len(phrase) <= max_chars and phrase not in seen:
                seen.add(phrase)
                out.append(phrase)
    return out


def pinyin_tones(text: str) -> str:
    """Tone-numbered pinyin ("ni3 hao3") for espeak-ng's cmn-latn-pinyin voice."""
    from pypinyin import Style, lazy_pinyin

    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
