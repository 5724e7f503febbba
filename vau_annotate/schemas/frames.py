"""FrameSet: the frames sampled from one video, with the timestamps every later stage relies on."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class FrameSet(BaseModel):
    """Sampled frames of one video; written last, as the completion marker of its sampling."""

    video_id: str
    policy: str = Field(description="Sampling policy as given, e.g. 'uniform:16', 'fps:1'.")
    indices: list[int] = Field(description="Frame indices in decode order.")
    timestamps: list[float] = Field(description="Presentation time of each frame in seconds.")
    paths: list[str] = Field(description="JPEG paths relative to the run directory.")
    width: int
    height: int
    sampling_fps: float = Field(description="Frames per second of video time that the sample represents.")
    decoder: str = Field(default="", description="Decoder that produced the frames (pyav-seek, pyav-sequential, decord, opencv).")

    @model_validator(mode="after")
    def _aligned(self) -> FrameSet:
        if not (len(self.indices) == len(self.timestamps) == len(self.paths)):
            raise ValueError("indices, timestamps and paths must have the same length")
        return self
