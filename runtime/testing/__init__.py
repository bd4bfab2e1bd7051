"""Stand-ins for real sensors on headless machines (tests, CI, demos).

pulse.PulseNullSink    a private PulseAudio daemon with a null sink whose monitor is
                       the default capture device: sounddevice records what is
                       played into it; it can be suspended, killed and restarted.
mjpeg.MjpegServer      a local HTTP server (127.0.0.1 only) streaming
                       multipart/x-mixed-replace JPEG frames, which OpenCV's FFmpeg
                       backend reads like an IP camera; it can be stopped, paused
                       and restarted on the same port.
"""
