import os

# Tests run on 2 CPU cores; keep intra-op threads predictable and never touch a network hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# A minimal real corpus, built once per test session: flite speech and short synthetic clips per task
# group, manifests in the corpus format, a tiny spectral codec trained on them, token shards encoded.
import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig
from unimoe_audio.data import TokenDataset, encode_corpus

RATE = 16_000
ITEMS = {"speech-en": ("en", "tts", 4), "speech-zh": ("zh", "tts", 4), "music": (None, "t2m", 3)}
TEXT = {"en": "the cat sat on the mat", "zh": "你好世界", None: None}
VOICES = ("slt", "rms")  # flite voices


def _speech(path, text, voice):
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    wave, rate = sf.read(path, dtype="float32")
    return len(wave) / rate


def _clip(rng, seconds):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    splits = {"train": [], "validation": [], "test": []}
    for group, (lang, task, n) in ITEMS.items():
        for split, count in (("train", n), ("validation", 2), ("test", 1)):
            for i in range(count):
                item_id = f"{group}-{split}-{i}"
                entry = {"id": item_id, "task": task, "group": group, "language": lang, "text": TEXT[lang],
                         "caption": None, "speaker": None if lang is None else f"{lang}-spk{i % 2}",
                         "audio": f"audio/{item_id}.wav"}
                if lang == "en":  # real speech, so the speech judges have something to judge
                    entry["speaker"] = VOICES[i % 2]
                    seconds = _speech(root / entry["audio"], TEXT[lang], entry["speaker"])
                else:
                    seconds = float(rng.uniform(0.16, 0.3) if lang else 2.5)
                    sf.write(root / entry["audio"], _clip(rng, seconds), RATE)
                if lang is None:
                    entry.update(caption="a calm piano piece at 120 BPM in C major", bpm=120, key="C major", parts=1)
                splits[split].append({**entry, "duration": seconds})
    prompt = splits["train"][0]
    splits["test"].append({**splits["test"][0], "id": "clone-test", "task": "clone", "speaker": prompt["speaker"],
                           "prompt_audio": prompt["audio"], "prompt_text": prompt["text"]})
    for split, entries in splits.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    config = SpectralCodecConfig(num_codebooks=2, codebook_size=16, n_mels=32, kmeans_iters=3)
    waves = [(_clip(rng, 0.5), RATE) for _ in range(4)]
    codec = SpectralCodec.train(waves, config, progress=False)
    codec.save_pretrained(root / "codec")
    encode_corpus(root, codec, progress=False)
    return root


@pytest.fixture(scope="session")
def train_set(corpus):
    return TokenDataset(corpus / "tokens", "train")


@pytest.fixture(scope="session")
def val_set(corpus):
    return TokenDataset(corpus / "tokens", "validation")
