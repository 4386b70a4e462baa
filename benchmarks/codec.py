"""Built-in codec quality and speed on held-out flite speech and FluidSynth music.

Builds its own audio (the `small`-style sources: flite voices slt/rms/awb/kal16; music21 Bach
chorales and folk tunes rendered with FluidR3 GM) into a cache folder, trains the codec on one
part and measures on another: Whisper-base / pocketsphinx WER of original vs round trip,
resemblyzer similarity, multi-resolution spectral distance, encode/decode speed, and a
spectrogram PNG. `--quick` uses fewer clips.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig, load_audio
from unimoe_audio.data.music import SOURCES, list_pieces, render_music
from unimoe_audio.data.text import english_sentences
from unimoe_audio.eval.judges import SpeakerJudge, SphinxJudge, WhisperJudge
from unimoe_audio.eval.spectral import multi_resolution_stft_distance
from unimoe_audio.eval.text import word_error_rate

VOICES = ("slt", "rms", "awb", "kal16")
RATE = 16_000


def make_audio(cache: Path, n_speech: int, n_music: int) -> tuple[list, list]:
    cache.mkdir(parents=True, exist_ok=True)
    sentences = random.Random(0).sample(english_sentences(), n_speech)
    speech = []
    for i, text in enumerate(sentences):
        path = cache / f"speech-{i:04d}.wav"
        if not path.is_file():
            subprocess.run(["flite", "-voice", VOICES[i % 4], "-t", text, "-o", str(path)], check=True)
        speech.append((text, *load_audio(path, RATE)))
    pieces = [(s, p, n) for s in SOURCES if s.name in ("bach", "irish", "han") for p, n in list_pieces(s)]
    random.Random(1).shuffle(pieces)
    music = []
    for i, (src, p, n) in enumerate(pieces):
        if len(music) == n_music:
            break
        path = cache / f"music-{i:04d}.wav"
        if not path.is_file():
            try:
                render_music(src, p, n, i, path)
            except RuntimeError:
                continue
        music.append(load_audio(path, RATE))
    return speech, music


def plot(pairs: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> None:
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 2, figsize=(11, 3 * len(pairs)))
    for row, (name, ref, est) in enumerate(pairs):
        for col, (label, wave) in enumerate((("original", ref), ("round trip", est))):
            mel = librosa.power_to_db(librosa.feature.melspectrogram(y=wave, sr=RATE, n_mels=80), ref=np.max)
            axes[row, col].imshow(mel, origin="lower", aspect="auto", cmap="magma")
            axes[row, col].set_title(f"{name}: {label}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("outputs/bench-codec-audio"))
    args = parser.parse_args()
    n_test = 8 if args.quick else 24
    speech, music = make_audio(args.cache, 120 + n_test, 30 + n_test // 2)
    train = [(w, r) for _, w, r in speech[n_test:]] + music[n_test // 2:]
    train_seconds = sum(len(w) for w, _ in train) / RATE
    t0 = time.perf_counter()
    codec = SpectralCodec.train(iter(train), SpectralCodecConfig(), progress=True)
    train_time = time.perf_counter() - t0

    whisper, sphinx, speaker = WhisperJudge(), SphinxJudge(), SpeakerJudge()
    refs, w_orig, w_rt, s_orig, s_rt, sims, dist_speech = [], [], [], [], [], [], []
    enc_time = dec_time = audio_seconds = 0.0
    roundtrips = {}
    for text, wave, rate in speech[:n_test]:
        t = time.perf_counter(); codes = codec.encode(wave, rate); enc_time += time.perf_counter() - t
        t = time.perf_counter(); out = codec.decode(codes)[0].numpy(); dec_time += time.perf_counter() - t
        audio_seconds += len(wave) / rate
        refs.append(text)
        w_orig.append(whisper.transcribe(wave, rate)); w_rt.append(whisper.transcribe(out, RATE))
        s_orig.append(sphinx.transcribe(wave, rate)); s_rt.append(sphinx.transcribe(out, RATE))
        sims.append(speaker.similarity(wave, rate, out, RATE))
        dist_speech.append(multi_resolution_stft_distance(wave, out, RATE))
        roundtrips.setdefault("speech", (wave, out))
    dist_music = []
    for wave, rate in music[: n_test // 2]:
        t = time.perf_counter(); codes = codec.encode(wave, rate); enc_time += time.perf_counter() - t
        t = time.perf_counter(); out = codec.decode(codes)[0].numpy(); dec_time += time.perf_counter() - t
        audio_seconds += len(wave) / rate
        dist_music.append(multi_resolution_stft_distance(wave, out, RATE))
        roundtrips.setdefault("music", (wave, out))
    wer_o, wer_r = word_error_rate(refs, w_orig), word_error_rate(refs, w_rt)
    swer_o, swer_r = word_error_rate(refs, s_orig), word_error_rate(refs, s_rt)
    print(f"codec: {codec.num_codebooks} x {codec.codebook_size} codes, {codec.frame_rate:.0f} frames/s; "
          f"trained on {train_seconds / 60:.1f} min in {train_time:.1f} s; {n_test} held-out speech, {n_test // 2} music clips")
    print("| metric | original | round trip | difference |")
    print("|---|---|---|---|")
    print(f"| Whisper-base WER (speech) | {wer_o:.3f} | {wer_r:.3f} | {100 * (wer_r - wer_o):+.1f} points |")
    print(f"| pocketsphinx WER (speech) | {swer_o:.3f} | {swer_r:.3f} | {100 * (swer_r - swer_o):+.1f} points |")
    print(f"| resemblyzer similarity to original (speech) | 1.000 | {np.mean(sims):.3f} (min {np.min(sims):.3f}) | |")
    print(f"| multi-resolution STFT distance, speech | 0 | {np.mean(dist_speech):.3f} | |")
    print(f"| multi-resolution STFT distance, music | 0 | {np.mean(dist_music):.3f} | |")
    print(f"| encode speed | | {audio_seconds / enc_time:.0f}x real time | |")
    print(f"| decode speed | | {audio_seconds / dec_time:.0f}x real time | |")
    print(f"| encode+decode | | {audio_seconds / (enc_time + dec_time):.0f}x real time | {torch.get_num_threads()} threads |")
    png = Path("docs/img/codec-spectrograms.png")
    plot([(name, ref[: len(est)], est) for name, (ref, est) in roundtrips.items()], png)
    print(f"spectrograms: {png}")


if __name__ == "__main__":
    main()
