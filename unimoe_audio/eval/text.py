"""Transcript normalisation and error rates (WER for English, CER for Mandarin)."""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation (keeping apostrophes inside words), collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text).replace(" '", " ").replace("' ", " ")
    return " ".join(text.split())


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two token lists (substitutions, insertions, deletions)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def _error_rate(refs: list[str], hyps: list[str], split) -> float:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = total = 0
    for ref, hyp in zip(refs, hyps):
        r, h = split(normalize_text(ref)), split(normalize_text(hyp))
        errors += edit_distance(r, h)
        total += len(r)
    return errors / max(total, 1)


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus-level WER: total word edits / total reference words."""
    return _error_rate(refs, hyps, str.split)


def char_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus-level CER over non-space characters (for Mandarin), compared in Simplified characters:
    Whisper often answers in Traditional ones, and some corpus texts (old poems) are Traditional."""
    import zhconv

    simplified = [[zhconv.convert(t, "zh-cn") for t in texts] for texts in (refs, hyps)]
    return _error_rate(*simplified, lambda s: [c for c in s if not c.isspace()])
