import os

# Tests run on 2 CPU cores; keep intra-op threads predictable and never touch a network hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# A minimal real corpus, built once per test session: flite speech and short synthetic clips per task
# group, manifests in the corpus format, a tiny spectral codec trained on them, token shards encoded.
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

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


# The same corpus plus video-to-music items: click tracks at 90/120/150 BPM, each with a video drawn
# (data/videos.py) from its beats and key; tokens encoded with the same codec (videos cached).
V2M_ITEMS = {"train": 3, "validation": 2, "test": 2}
V2M_BPM = (90, 120, 150)
V2M_KEYS = ((0, "major", "C major"), (9, "minor", "A minor"), (7, "major", "G major"))


def click_track(bpm: float, seconds: float, tonic: int, mode: str) -> np.ndarray:
    """A short chord of the key's tonic triad on every beat."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = t % (60 / bpm)
    chord = sum(np.sin(2 * np.pi * 261.63 * 2 ** ((tonic + step) / 12) * t) for step in (0, 4 if mode == "major" else 3, 7))
    return (0.2 * chord * np.exp(-phase / 0.05)).astype(np.float32)


@pytest.fixture(scope="session")
def video_corpus(corpus, tmp_path_factory):
    from unimoe_audio.codec import load_codec
    from unimoe_audio.data.videos import Timeline, render_video

    root = tmp_path_factory.mktemp("video-corpus")
    for name in ("audio", "codec"):
        shutil.copytree(corpus / name, root / name)
    (root / "videos").mkdir()
    seconds = 2.5
    for split, count in V2M_ITEMS.items():
        entries = [json.loads(line) for line in (corpus / f"{split}.jsonl").read_text().splitlines()]
        for i in range(count):
            n = sum(V2M_ITEMS[s] for s in list(V2M_ITEMS)[: list(V2M_ITEMS).index(split)]) + i
            bpm, (tonic, mode, key) = V2M_BPM[n % 3], V2M_KEYS[n % 3]
            item_id = f"v2m-{split}-{i}"
            sf.write(root / "audio" / f"{item_id}.wav", click_track(bpm, seconds, tonic, mode), RATE)
            beats = tuple(np.arange(0, seconds, 60 / bpm))
            render_video(Timeline(seconds, ((0.0, seconds, 60 + tonic),), beats, (), tonic, mode),
                         root / "videos" / f"{item_id}.mp4")
            entries.append({"id": item_id, "task": "v2m", "group": "v2m", "language": None,
                            "caption": "music for this video.", "audio": f"audio/{item_id}.wav",
                            "video": f"videos/{item_id}.mp4", "bpm": bpm, "key": key, "duration": seconds})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    encode_corpus(root, load_codec(root / "codec"), progress=False)
    return root


# The tiny released-format checkpoint (tests/fixtures/released/tiny.py, a folder of scripts, not a
# package), with its random DAC, written as the authors' folder is laid out.
RELEASED_FIXTURES = Path(__file__).parent / "fixtures" / "released"


def released_fixture(name: str):
    """tests/fixtures/released/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"released_{name}", RELEASED_FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def released_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    layout = json.loads((RELEASED_FIXTURES / "layout.json").read_text())
    folder = released_fixture("tiny").write_checkpoint(root / "ckpt", layout, seed=0)
    pth, _ = released_fixture("dac").write_dac_both_ways(root)
    shutil.copytree(pth, folder / "dac_model")
    return folder
