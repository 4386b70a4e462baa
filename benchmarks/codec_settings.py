"""Which codec settings keep speech intelligible: Whisper-base WER of codec round trips.

Trains the built-in spectral codec with several frame rates and codebook shapes on a corpus's
English training recordings (`--minutes`), encodes and decodes the first `--items` English test recordings,
and prints Whisper-base WER on the round trips beside the recordings themselves (the ceiling).
This chose configs/pretrained.yaml's codec (docs/benchmarks.md, "Codec settings").

    python benchmarks/codec_settings.py --corpus data/large [--items 24] [--minutes 15] [--only 8x256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig, load_audio
from unimoe_audio.data import read_manifest
from unimoe_audio.eval.judges import WhisperJudge
from unimoe_audio.eval.text import word_error_rate

SETTINGS = {
    "50 Hz, 12 x 1024": dict(hop_length=320, n_fft=1024, num_codebooks=12, codebook_size=1024),
    "50 Hz, 8 x 256": dict(hop_length=320, n_fft=1024, num_codebooks=8, codebook_size=256),
    "50 Hz, 4 x 256": dict(hop_length=320, n_fft=1024, num_codebooks=4, codebook_size=256),
    "50 Hz, 4 x 1024": dict(hop_length=320, n_fft=1024, num_codebooks=4, codebook_size=1024),
    "25 Hz, 8 x 256 (n_fft 2048)": dict(hop_length=640, n_fft=2048, num_codebooks=8, codebook_size=256),
    "25 Hz, 4 x 1024 (n_fft 2048)": dict(hop_length=640, n_fft=2048, num_codebooks=4, codebook_size=1024),
    "25 Hz, 8 x 1024 (n_fft 1280)": dict(hop_length=640, n_fft=1280, num_codebooks=8, codebook_size=1024),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("data/large"))
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--minutes", type=float, default=15.0, help="training audio per codec")
    p.add_argument("--only", help="run only the settings whose name contains this")
    args = p.parse_args()
    train = [args.corpus / e["audio"] for e in read_manifest(args.corpus / "train.jsonl")
             if e["task"] == "tts" and e["language"] == "en"]
    test = [e for e in read_manifest(args.corpus / "test.jsonl") if e["task"] == "tts" and e["language"] == "en"][: args.items]
    waves = [load_audio(args.corpus / e["audio"], 16_000)[0] for e in test]
    refs = [e["text"] for e in test]
    judge = WhisperJudge()

    def wer(ws) -> float:
        return word_error_rate(refs, [judge.transcribe(w, 16_000, "en") for w in ws])

    ceiling = wer(waves)
    print(f"{len(test)} English test recordings; Whisper-base WER on the recordings themselves: {ceiling:.3f}")
    print("| codec | WER of round trips | vs recordings | time |\n|---|---|---|---|")
    for name, settings in SETTINGS.items():
        if args.only and args.only not in name:
            continue
        start = time.perf_counter()
        codec = SpectralCodec.train_on_files(train, SpectralCodecConfig(**settings), args.minutes, progress=False)
        score = wer([codec.decode(codec.encode(w, 16_000))[0].numpy() for w in waves])
        print(f"| {name} | {score:.3f} | {score - ceiling:+.3f} | {time.perf_counter() - start:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
