"""What one request may ask for: text length, music duration, upload size. Each check raises an
ApiError naming the field (413 for an upload that is too large, 422 for the rest)."""

from __future__ import annotations

from dataclasses import dataclass

from unimoe_audio.serve.errors import ApiError


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = 1000  # input, prompt_text, caption
    max_duration: float = 30.0  # seconds of music
    max_upload_bytes: int = 10 * 2 ** 20  # a voice prompt of 20 s is ~0.6 MB as 16 kHz wav

    def text(self, value: str, field: str) -> str:
        if not value.strip():
            raise ApiError(422, f"{field} is empty", field)
        if len(value) > self.max_text_chars:
            raise ApiError(422, f"{field} has {len(value)} characters; at most {self.max_text_chars} are allowed", field)
        return value

    def duration(self, seconds: float, field: str = "duration") -> float:
        if not 0 < seconds <= self.max_duration:
            raise ApiError(422, f"{field} must be in (0, {self.max_duration}] seconds, got {seconds}", field)
        return seconds

    def upload(self, size: int, field: str) -> None:
        if size > self.max_upload_bytes:
            raise ApiError(413, f"{field} is {size} bytes; at most {self.max_upload_bytes} are allowed", field)
