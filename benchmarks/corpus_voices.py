"""Rendering the corpus's English: seconds per sentence for each base voice, festival's two ways.

Speaks `--sentences` sentences of the builder's English source (seeded sample) with every English
base voice through the builder's own `synthesize` (synthesizer -> sox pitch/tempo/trim -> 16 kHz
wav). For festival's voices it also times, through the same `synthesize`, the way the builder spoke
before: one `text2wave` process per sentence, which starts festival and loads the voice each time,
where `synthesize` keeps one festival process per voice and sends it each sentence (the wav is the
same, byte for byte: tests/data/test_voices.py). Prints seconds per sentence and the ratio, measured in the same run,
and what the English of a corpus size costs at these rates with the builder's 2 workers.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from unittest import mock

from unimoe_audio.data import voices
from unimoe_audio.data.build import plan
from unimoe_audio.data.text import english_sentences
from unimoe_audio.data.voices import BASE_VOICES, Speaker, synthesize


def text2wave(voice: str, text: str, wav: Path) -> None:
    """How the builder spoke with festival before: a text2wave process per sentence."""
    voices._run(["text2wave", "-eval", f"({voice})", "-o", str(wav)], input=text.encode())


def seconds_per_sentence(speak, texts: list[str], out: Path) -> float:
    speak(texts[0], out)  # a festival process starts with its first sentence; the build pays that once per worker
    start = time.perf_counter()
    for text in texts:
        speak(text, out)
    return (time.perf_counter() - start) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="xl", help="corpus size whose English rendering is costed")
    args = parser.parse_args()
    texts = random.Random(args.seed).sample(english_sentences(), args.sentences)

    english = [item for item in plan(args.size, 0) if item["render"]["kind"] == "speech"
               and item["render"]["speaker"].language == "en"]
    items = {v.name: sum(item["render"]["speaker"].base == v for item in english) for v in BASE_VOICES}

    print("| voice | engine | s per sentence | with a text2wave per sentence | ratio |")
    print("|---|---|---|---|---|")
    before = after = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.wav"
        for voice in (v for v in BASE_VOICES if v.language == "en"):
            def speak(text: str, wav: Path) -> None:
                synthesize(Speaker(voice), text, wav)

            now = seconds_per_sentence(speak, texts, out)
            after += now * items[voice.name]
            if voice.engine != "festival":
                before += now * items[voice.name]
                print(f"| {voice.name} | {voice.engine} | {now:.3f} | - | - |")
                continue
            with mock.patch.object(voices, "_festival_say", text2wave):
                old = seconds_per_sentence(speak, texts, out)
            before += old * items[voice.name]
            print(f"| {voice.name} | {voice.engine} | {now:.3f} | {old:.3f} | {old / now:.1f}x |")
    print(f"\n`{args.size}`'s {len(english)} English items on 2 workers: {before / 2 / 60:.0f} min with text2wave, "
          f"{after / 2 / 60:.0f} min now ({before / after:.2f}x)")


if __name__ == "__main__":
    main()
