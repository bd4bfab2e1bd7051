"""What a replayed session contains: labelled segments and scripted faults.

Fault kinds and what they do to the media:
  camera_gone    no camera: frames are black placeholders in the file and the span is
                 an *outage* (the replay camera source cannot open or read during it,
                 so the runtime's real reconnect path runs)
  camera_frozen  the frame at the span start repeats byte for byte
  camera_black   black frames (a covered lens)
  mic_silent     digital silence (a muted mic): callbacks go on
  mic_gone       silence in the file and an outage: callbacks stop (an unplugged mic)
  mic_noise      loud broadband interference over the speech (a live but broken mic)
  camera_smear   a smeared, washed-out lens (held-out image corruptions: motion smear
                 and low contrast), frames keep changing
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

FAULT_KINDS = ("camera_gone", "camera_frozen", "camera_black", "mic_silent", "mic_gone", "mic_noise", "camera_smear")
MODALITY_OF_FAULT = {"camera_gone": "image", "camera_frozen": "image", "camera_black": "image", "mic_silent": "audio", "mic_gone": "audio", "mic_noise": "audio", "camera_smear": "image"}
DEGRADING_FAULTS = ("mic_noise", "camera_smear")  # the sensor stays alive: the runtime should say "degraded"
# Faults a cheap fast path catches first (its runtime option, 0: off). With that path
# off, the engine's learned reliability alone must see them, so they are scored like
# DEGRADING_FAULTS (issue 8: "measure it with them off").
FAST_PATH_FAULTS = {"camera_black": "blank_threshold", "mic_silent": "silence_threshold"}


def degrading_faults(**thresholds: float) -> tuple:
    """The fault kinds the runtime should report "degraded" given the fast-path
    thresholds in force (keyword: the RunConfig field, e.g. silence_threshold=0)."""
    return DEGRADING_FAULTS + tuple(k for k, opt in FAST_PATH_FAULTS.items() if opt in thresholds and not thresholds[opt])


@dataclass
class Fault:
    kind: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(FAULT_KINDS)}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"fault {self.kind}: need 0 <= start < end (got {self.start}, {self.end})")


@dataclass
class Script:
    """``segments`` examples shown/spoken for ``segment_seconds`` each; the word is
    repeated every ``say_every`` seconds (a 1 s audio window then always holds
    speech, as with an operator calling out a digit)."""

    segments: int = 30
    segment_seconds: float = 4.0
    say_every: float = 1.0
    faults: list = field(default_factory=list)
    fps: int = 30
    frame_size: tuple = (320, 240)  # width, height
    audio_rate: int = 48000
    seed: int = 0

    @property
    def duration(self) -> float:
        return self.segments * self.segment_seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        return d


def default_script(segments: int = 30, segment_seconds: float = 4.0) -> Script:
    """Two minutes (by default) alternating clean spans with each fault in turn,
    each fault 3 segments long; spans scale with ``segment_seconds``."""
    s = segment_seconds
    plan = [("camera_gone", 5, 8), ("mic_gone", 11, 14), ("camera_black", 17, 20), ("camera_frozen", 22, 25), ("mic_silent", 27, 30)]
    scale = segments / 30.0
    faults = [Fault(k, round(a * scale) * s, round(b * scale) * s) for k, a, b in plan if round(b * scale) > round(a * scale)]
    return Script(segments=segments, segment_seconds=segment_seconds, faults=faults)


def degraded_script(segments: int = 20, segment_seconds: float = 3.0) -> Script:
    """Clean spans around a noisy-mic span and a smeared-camera span (each a quarter
    of the session): what the ``degraded`` state and reliability fusion are for."""
    s = segment_seconds
    q = max(segments // 5, 1)
    faults = [Fault("mic_noise", q * s, 2 * q * s), Fault("camera_smear", 3 * q * s, 4 * q * s)]
    return Script(segments=segments, segment_seconds=segment_seconds, faults=faults)
