"""What the judges make of a corpus's own recordings: the ceiling every generated score is read against.

Scores are cached per recording in <corpus>/judge-cache.json, shared by the corpus build report
and `unimoe-audio eval`, so each recording is judged once.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from unimoe_audio.codec import load_audio
from unimoe_audio.data import read_manifest
from unimoe_audio.data.build import write_report
from unimoe_audio.eval.judges import SphinxJudge, WhisperJudge
from unimoe_audio.eval.text import char_error_rate, word_error_rate
from unimoe_audio.io import read_json, write_json

RATE = 16_000


class GroundTruthCache:
    """Judge outputs on the corpus's own recordings, kept in <corpus>/judge-cache.json across runs."""

    def __init__(self, corpus: Path):
        self.path = corpus / "judge-cache.json"
        self.values = read_json(self.path, "judging the recordings again") or {}

    def get(self, key: str, compute):
        if key not in self.values:
            self.values[key] = compute()
        return self.values[key]

    def save(self) -> None:
        write_json(self.path, self.values)


def judge_corpus(corpus: Path, entries: list[dict], per_language: int, progress: bool = True) -> dict:
    """Whisper-base WER (en) / CER (zh) and pocketsphinx WER (en) on the first `per_language`
    synthesized (tts) recordings of each language among `entries`."""
    whisper, sphinx, cache = WhisperJudge(), SphinxJudge(), GroundTruthCache(corpus)
    scores = {}
    for language in ("en", "zh"):
        items = [e for e in entries if e["task"] == "tts" and e["language"] == language][:per_language]
        if not items:
            continue
        refs, heard, heard_sphinx = [], [], []
        for e in tqdm(items, desc=f"judging {language} recordings", unit="item", disable=not progress):
            wave = load_audio(corpus / e["audio"], RATE)[0]
            refs.append(e["text"])
            heard.append(cache.get(f"whisper:{language}:{e['audio']}", lambda: whisper.transcribe(wave, RATE, language)))
            if language == "en":
                heard_sphinx.append(cache.get(f"sphinx:{e['audio']}", lambda: sphinx.transcribe(wave, RATE)))
        if language == "en":
            scores["en"] = {"items": len(items), "wer_whisper": word_error_rate(refs, heard),
                            "wer_sphinx": word_error_rate(refs, heard_sphinx)}
        else:
            scores["zh"] = {"items": len(items), "cer_whisper": char_error_rate(refs, heard)}
    cache.save()
    return scores


def judge_report(corpus: Path, per_language: int, progress: bool = True) -> dict:
    """Add the judges' scores on a built corpus's test recordings to its report (report.json/.md)."""
    report = json.loads((corpus / "report.json").read_text(encoding="utf-8"))
    report["ground_truth_judges"] = judge_corpus(corpus, read_manifest(corpus / "test.jsonl"), per_language, progress)
    write_report(corpus, report)
    return report
