"""`--config FILE.toml`: stations parsed into RunConfigs, one line per kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.stations import read_stations, single_station

GOOD = """
[runtime]
engines = "eng/a"
rate = 5
staleness = 2

[[station]]
name = "line1"
camera = "0"
mic = "default"

[[station]]
name = "line2"
camera = "rtsp://camera-line2.local/stream1"
mic = "none"
engines = "eng/b"
video-rate = 7.5
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stations.toml"
    p.write_text(text)
    return p


def test_two_stations_inherit_and_override(tmp_path):
    s = read_stations(write(tmp_path, GOOD), base={"hop": 0.5, "rate": 99.0})
    assert [x.name for x in s] == ["line1", "line2"]
    a, b = s[0].cfg, s[1].cfg
    assert a.engines == Path("eng/a") and b.engines == Path("eng/b")
    assert a.rate == 5 and b.rate == 5  # the file's [runtime] beats the command line's base
    assert a.hop == 0.5 and b.hop == 0.5  # the command line's value where the file says nothing
    assert b.video_rate == 7.5 and a.video_rate is None  # '-' or '_' in keys
    assert b.mic is None and a.mic == "default" and b.camera.startswith("rtsp://")


def test_without_config_one_default_station():
    from edge_mla.runtime.config import RunConfig

    (st,) = single_station(RunConfig(engines="e", camera="x.avi", mic="none"))
    assert st.name == "default" and st.cfg.mic is None


@pytest.mark.parametrize(
    "text, needle",
    [
        (GOOD.replace("rate = 5", "rat = 5"), "[runtime]: unknown key 'rat'"),
        (GOOD.replace('video-rate = 7.5', 'camra = "1"'), "[[station]] #2 (line2): unknown key 'camra'"),
        (GOOD.replace("rate = 5", 'rate = "fast"'), "[runtime]: rate must be a number, not a string"),
        (GOOD.replace("video-rate = 7.5", "loop = 1"), "loop must be true or false, not an integer"),
        (GOOD.replace('name = "line2"', 'name = "line1"'), "duplicate station name 'line1' (also station #1)"),
        (GOOD.replace('name = "line2"\n', ""), "every station needs a non-empty name"),
        # the name becomes an MQTT topic level, a metrics label and the spool file's name
        (GOOD.replace('name = "line2"', 'name = "../etc"'), "station name '../etc' must be letters, digits"),
        (GOOD.replace('name = "line2"', 'name = "line#2"'), "station name 'line#2' must be letters, digits"),
        (GOOD.replace('name = "line2"', 'name = "line 2"'), "station name 'line 2' must be letters, digits"),
        (GOOD.replace('name = "line2"', 'name = "a\\nb"'), "station name 'a\\nb' must be letters, digits"),
        (GOOD.replace('camera = "0"\nmic = "default"\n', ""), "(line1): no sensor"),
        (GOOD.replace('camera = "0"\nmic = "default"', 'camera = "none"\nmic = "none"'), "(line1): no sensor"),
        (GOOD.replace("rate = 5", "rate = -1"), "(line1): --rate"),
        (GOOD.replace("staleness = 2", "staleness = nan"), "(line1): --staleness"),
        (GOOD.replace("[runtime]", "[runtim]"), "unknown table 'runtim'"),
        ("[runtime]\nengines = 'e'\n", "no [[station]] table"),
        (GOOD.replace('engines = "eng/a"\n', ""), "(line1): no engines"),
        (GOOD + "\n[[station]\n", "not valid TOML"),
        (GOOD.replace('video-rate = 7.5', 'camera-outages = []'), "scripted outages"),
    ],
)
def test_config_mistakes_are_one_line_naming_file_and_key(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(EdgeMlaError) as e:
        read_stations(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and needle in msg and "\n" not in msg


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(EdgeMlaError, match="cannot read the config file"):
        read_stations(tmp_path / "missing.toml")
    p = tmp_path / "latin1.toml"
    p.write_bytes(GOOD.replace("line1", "l\xefne1").encode("latin-1"))
    with pytest.raises(EdgeMlaError, match="not UTF-8"):
        read_stations(p)


def test_stations_sharing_a_clips_folder_each_get_a_subfolder(tmp_path):
    """Stations given one clips folder ([runtime] clips) destroyed each other's clips:
    the same temporary names, one index, and reason.json did not name the station."""
    from edge_mla.runtime.multi import _one_clips_folder_per_station

    text = GOOD.replace("staleness = 2", f"staleness = 2\nclips = {str(tmp_path / 'clips')!r}")
    s = read_stations(write(tmp_path, text))
    _one_clips_folder_per_station(s)
    assert [x.cfg.clips for x in s] == [tmp_path / "clips" / "line1", tmp_path / "clips" / "line2"]
    own = read_stations(write(tmp_path, GOOD.replace('mic = "none"', f'mic = "none"\nclips = {str(tmp_path / "b")!r}')))
    _one_clips_folder_per_station(own)
    assert own[1].cfg.clips == tmp_path / "b" and own[0].cfg.clips is None  # a folder of its own stays as given


def test_stations_sharing_an_engine_must_agree_on_batch_wait(tmp_path):
    """A shared, batched engine has one wait: it took the first station's silently."""
    from edge_mla.runtime.multi import MultiRuntime

    text = GOOD.replace('engines = "eng/b"\n', "").replace('mic = "default"', 'mic = "default"\nbatch_wait = 0.5')
    with pytest.raises(EdgeMlaError, match=r"station line2: batch_wait 0.005 differs from station line1's 0.5, and they share the image engine"):
        MultiRuntime(read_stations(write(tmp_path, text)))
