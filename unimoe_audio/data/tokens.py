"""`data encode`: corpus audio -> codec tokens in memory-mappable shards; `TokenDataset` reads them.

<corpus>/tokens/<split>/codes.npy holds every item's codes concatenated along time
(int16 [K, total_frames]); index.jsonl holds each manifest entry plus `offset`/`frames` (and
`prompt_offset`/`prompt_frames` for clone items, pointing at the prompt utterance's codes).

A split with v2m items also caches their videos, decoded once at VIDEO_FPS and VIDEO_SIZE (the
vision encoder's input, model/vision.py), in video.npy (uint8 [total_video_frames, S, S, 3]) with
`video_offset`/`video_frames` per item; info.json then records the video rate and size and the
codec's frame rate, which line video frames up with codec frames. Training reads frames from
there (no video decoding in the loop); a 10 s clip costs 80 × 3 KB.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unimoe_audio.codec import Codec, load_audio
from unimoe_audio.data.schema import SPLITS, read_manifest
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, read_json, write_json
from unimoe_audio.video import read_video

VIDEO_FPS = 8.0  # frames per second of the cached videos
VIDEO_SIZE = 32  # their side in pixels (centre square)
MAX_VIDEO_SECONDS = 600.0  # a corpus video longer than this is left out


@dataclass
class Example:
    meta: dict  # the manifest entry
    codes: torch.Tensor  # [K, T] long
    prompt_codes: torch.Tensor | None  # [K, Tp] long, clone items only
    video: torch.Tensor | None = None  # uint8 [Tv, S, S, 3] at VIDEO_FPS, v2m items only
    video_step: float | None = None  # codec frames per video frame: video frame i shows codec frame i · video_step


_WORKER_CODEC: Codec | None = None


def _start_worker(codec: Codec) -> None:
    global _WORKER_CODEC
    _WORKER_CODEC = codec
    torch.set_num_threads(1)  # one process per core


def _encode_file(path: Path, codec: Codec | None = None) -> np.ndarray | str:
    """Codes [K, T] int16 of one audio file (with `codec`, or a worker's), or why it cannot be read."""
    try:
        wave, rate = load_audio(path)
        return (codec or _WORKER_CODEC).encode(wave, rate)[0].numpy().astype(np.int16)
    except UniMoEError as err:
        return str(err)


def _read_video(path: Path) -> np.ndarray | str:
    """Frames of one corpus video at the cached rate and size, or why it cannot be read."""
    try:
        return read_video(path, VIDEO_FPS, VIDEO_SIZE, MAX_VIDEO_SECONDS)[0]
    except UniMoEError as err:
        return str(err)


def _encode_files(paths: list[Path], codec: Codec, workers: int, desc: str, progress: bool) -> list[np.ndarray | str]:
    bar = dict(total=len(paths), desc=desc, unit="file", disable=not progress)
    if workers <= 1 or len(paths) < 2 * workers:
        return [_encode_file(p, codec) for p in tqdm(paths, **bar)]
    with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(codec,)) as pool:
        return list(tqdm(pool.map(_encode_file, paths, chunksize=16), **bar))


def encode_corpus(corpus: Path, codec: Codec, splits=SPLITS, progress: bool = True, workers: int = 1) -> dict[str, int]:
    """Encode every split's audio (`workers` processes); returns the items encoded per split. A
    split whose shard is complete, readable and made by the same codec (the hash of its weights)
    from the same manifest (the hash of its bytes) is kept; any other shard, or one whose info.json
    is corrupt, is encoded again. Items whose audio cannot be read or is too short for the codec
    are left out and listed in the shard's info.json (both reported on stderr), so one bad file
    never stops the run."""
    counts = {}
    codec_hash = codec.fingerprint()
    manifests = {split: read_manifest(corpus / f"{split}.jsonl") for split in splits}  # every line checked first
    for split, entries in manifests.items():
        manifest = corpus / f"{split}.jsonl"
        out = corpus / "tokens" / split
        info_path = out / "info.json"
        signature = {"codec_type": codec.codec_type, "num_codebooks": codec.num_codebooks,
                     "codebook_size": codec.codebook_size, "items": len(entries), "codec_sha256": codec_hash,
                     "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
        videos = sorted({e["video"] for e in entries if e.get("video")})
        if videos:  # a split without videos keeps the signature (and shards) it had before videos existed
            signature.update(video_fps=VIDEO_FPS, video_size=VIDEO_SIZE, frame_rate=codec.frame_rate)
        info = read_json(info_path, f"encoding {split} again")
        if isinstance(info, dict):
            if {k: info.get(k) for k in signature} == signature and _readable(corpus / "tokens", split):
                counts[split] = len(entries) - len(info.get("skipped", []))
                continue
        files = sorted({rel for e in entries for rel in (e["audio"], e.get("prompt_audio")) if rel is not None})
        encoded = dict(zip(files, _encode_files([corpus / rel for rel in files], codec, workers, f"encoding {split}", progress)))
        decoded = {rel: _read_video(corpus / rel) for rel in tqdm(videos, desc=f"reading {split} videos", unit="video",
                                                                  disable=not progress or not videos)}
        chunks, clips, index, skipped, offset, video_offset = [], [], [], [], 0, 0
        for entry in entries:
            parts = [(prefix, encoded[rel]) for prefix, rel in (("", entry["audio"]), ("prompt_", entry.get("prompt_audio")))
                     if rel is not None]
            frames = decoded.get(entry.get("video"))
            failed = [codes for _, codes in parts if isinstance(codes, str)] + ([frames] if isinstance(frames, str) else [])
            if failed:
                skipped.append({"id": entry["id"], "reason": failed[0]})
                continue
            row = dict(entry)
            for prefix, codes in parts:
                chunks.append(codes)
                row[f"{prefix}offset"], row[f"{prefix}frames"] = offset, codes.shape[1]
                offset += codes.shape[1]
            if frames is not None:
                clips.append(frames)
                row["video_offset"], row["video_frames"] = video_offset, len(frames)
                video_offset += len(frames)
            index.append(row)
        if skipped:
            print(f"encoding {split}: left out {len(skipped)} items whose audio cannot be read "
                  f"(listed in {info_path}), e.g. {skipped[0]['reason']}", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "codes.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.concatenate(chunks, axis=1) if chunks else np.zeros((codec.num_codebooks, 0), np.int16))
        if videos:
            with atomic_path(out / "video.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.concatenate(clips) if clips else np.zeros((0, VIDEO_SIZE, VIDEO_SIZE, 3), np.uint8))
        with atomic_path(out / "index.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in index), encoding="utf-8")
        write_json(info_path, {**signature, "skipped": skipped})  # written last: marks the shard complete
        counts[split] = len(index)
    return counts


def _readable(tokens_dir: Path, split: str) -> bool:
    try:
        TokenDataset(tokens_dir, split)
        return True
    except UniMoEError as err:
        print(f"encoding {split} again: {err}", file=sys.stderr)
        return False


class TokenDataset:
    """Random access to encoded items: `dataset[i] -> Example`; `groups[i]` is the task group."""

    def __init__(self, tokens_dir: str | Path, split: str):
        root = Path(tokens_dir) / split
        if not (root / "info.json").is_file():
            raise UniMoEError(f"no encoded tokens at {root}; run `unimoe-audio data encode` first")
        try:
            self.info = json.loads((root / "info.json").read_text())  # the codec that made the tokens, skipped items
            self.codes = np.load(root / "codes.npy", mmap_mode="r")  # [K, total]
            self.index = read_manifest(root / "index.jsonl")
            has_video = any("video_offset" in r for r in self.index)
            self.video = np.load(root / "video.npy", mmap_mode="r") if has_video else None  # [total, S, S, 3]
        except (OSError, ValueError) as err:
            raise UniMoEError(f"token shard {root} is corrupt ({err}); delete it and re-run `unimoe-audio data encode`") from None
        last = max((r["offset"] + r["frames"] for r in self.index), default=0)
        last_video = max((r["video_offset"] + r["video_frames"] for r in self.index if "video_offset" in r), default=0)
        if last > self.codes.shape[1] or last_video > (0 if self.video is None else len(self.video)):
            raise UniMoEError(f"token shard {root} is truncated; delete it and re-run `unimoe-audio data encode`")
        self.groups = [r["group"] for r in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def select(self, keep: list[int]) -> "TokenDataset":
        """A view holding only items `keep` (same shard, no copy)."""
        view = copy.copy(self)
        view.index = [self.index[i] for i in keep]
        view.groups = [self.groups[i] for i in keep]
        return view

    def _slice(self, offset: int, frames: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.codes[:, offset: offset + frames], dtype=np.int64))

    def __getitem__(self, i: int) -> Example:
        r = self.index[i]
        prompt = self._slice(r["prompt_offset"], r["prompt_frames"]) if "prompt_offset" in r else None
        video = step = None
        if "video_offset" in r:
            video = torch.from_numpy(np.array(self.video[r["video_offset"]: r["video_offset"] + r["video_frames"]]))
            step = self.info["frame_rate"] / self.info["video_fps"]
        return Example(meta=r, codes=self._slice(r["offset"], r["frames"]), prompt_codes=prompt, video=video,
                       video_step=step)
