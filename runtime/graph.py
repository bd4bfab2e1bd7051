"""The sensor table: which sensor kinds exist and which modality each feeds.

One home for the pairing that the runtime, the stations layer, the replay scorer and
the reports all need (it used to be spelled out in several modules).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SensorKind:
    name: str  # the sensor's name in records and reports ("camera")
    modality: str  # the engine it feeds ("image")
    option: str  # the RunConfig field / `edge-mla run` flag naming the device ("camera")


SENSORS = (
    SensorKind("camera", "image", "camera"),
    SensorKind("mic", "audio", "mic"),
)
SENSOR_OF = {k.modality: k.name for k in SENSORS}  # modality -> sensor name
MODALITY_OF = {k.name: k.modality for k in SENSORS}  # sensor name -> modality


def configured_modalities(cfg) -> list:
    """The modalities a RunConfig asks for: those whose sensor option is not 'none'."""
    return [k.modality for k in SENSORS if getattr(cfg, k.option) is not None]
