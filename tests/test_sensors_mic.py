"""The microphone path through a real capture device: a private PulseAudio daemon
with a null sink, a WAV played into it with paplay, recorded by sounddevice.

Runs in CI (the Makefile installs pulseaudio and libportaudio2); never skipped.
Mid-run the sink is suspended (callbacks stop, no error: an unplugged USB mic) and
later the daemon is killed and restarted (the device disappears and returns): the
runtime must keep deciding on the camera and recover the mic each time.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from test_runtime_support import Collect, engines, one_label_media, sensor_state, using, wait_for  # noqa: F401

pytestmark = pytest.mark.sensors


def _last(out) -> str:
    """What the runtime said last: the newest record's sensors, used modalities and decision."""
    if not len(out):
        return "no record yet"
    r = out.since(len(out) - 1)[-1]
    return f"{len(out)} records; last: sensors {r['sensors']}, used {r['used']}, decision {r['decision']} {r.get('reason', '')}"


def test_mic_through_null_sink_survives_suspend_and_daemon_restart(engines, tmp_path):
    from edge_mla.runtime import RunConfig, Runtime
    from edge_mla.runtime.testing.pulse import PulseNullSink

    media = one_label_media(tmp_path / "media", label=3, seconds=60)
    with PulseNullSink(tmp_path / "pulse") as pa:
        import sounddevice as sd

        sd._terminate()  # PortAudio must see this daemon (it enumerates at initialisation)
        sd._initialize()
        pa.play(media.audio)
        out = Collect()
        cfg = RunConfig(engines=engines, camera=str(media.video), mic="default", loop=True, mic_timeout=1.0, staleness=1.0, backoff_max=1.0, json_stdout=False)
        rt = Runtime(cfg, outputs=[out])
        assert rt.sources["mic"].rate == 48000
        rt.start()
        try:
            wait_for(lambda: sensor_state(out, "mic") == "ok" and using(out, "audio"), 12, what="mic ok and audio used", context=lambda: _last(out))
            time.sleep(3)
            heard = [r["modalities"]["audio"]["label"] for r in out.since(len(out) - 25) if r["modalities"]["audio"].get("used")]
            assert len(heard) >= 15, _last(out)
            # real speech went through PulseAudio at 48 kHz and the resampler: the audio engine hears "3"
            assert np.mean([h == "3" for h in heard]) >= 0.6, heard

            # 1) suspend: callbacks stop without an error
            pa.suspend(True)
            n0 = len(out)
            wait_for(lambda: sensor_state(out, "mic") == "lost", 5, what="mic lost", context=lambda: _last(out))
            time.sleep(1.5)
            during = out.since(n0)
            lost = [r for r in during if r["sensors"]["mic"]["state"] != "ok"]
            assert len(lost) >= 10, _last(out)  # decisions keep coming
            assert all(r["decision"] and r["label"] == "3" for r in lost[-10:])  # on the camera alone
            assert all(r["used"] == ["image"] for r in lost[-10:])
            pa.suspend(False)
            wait_for(lambda: sensor_state(out, "mic") == "ok" and using(out, "audio"), 12, what="mic ok and audio used", context=lambda: _last(out))

            # 2) kill the sound server: the device disappears; restart it
            pa.kill()
            n1 = len(out)
            wait_for(lambda: sensor_state(out, "mic") == "lost", 5, what="mic lost", context=lambda: _last(out))
            time.sleep(2)
            assert all(r["used"] == ["image"] for r in out.since(n1)[-10:])
            pa.start()
            pa.play(media.audio)
            wait_for(lambda: sensor_state(out, "mic") == "ok" and using(out, "audio"), 15, what="mic ok and audio used", context=lambda: _last(out))
        finally:
            report = rt.join()
    assert report.sensors["mic"]["reconnects"] >= 2
    assert report.sensors["mic"]["failures"] >= 2
    assert report.workers["audio"]["errors"] == 0
    assert report.no_decisions <= 5  # only at start-up, before the first results
