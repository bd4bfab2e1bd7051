"""Sensor sources: each keeps only its newest data, stamped on the runtime clock.

camera.CameraSource (OpenCV: index, file, URL), microphone.MicSource (sounddevice or
a WAV file played in real time, see wavfile). Both report a SensorStatus and are
supervised by runtime.watchdog.
"""
