"""Sensor sources: each keeps only its newest data, stamped on the runtime clock.

camera.CameraSource (OpenCV: index, file, URL), microphone.MicSource (sounddevice or
a WAV file played in real time, see wavfile). Both follow the Source protocol of
runtime/graph.py (take the newest item, report stats, stop), report a SensorStatus
and are supervised by runtime.watchdog; builtin.py builds them from a RunConfig for
the sensor table.
"""
