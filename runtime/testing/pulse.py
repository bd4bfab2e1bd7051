"""A private PulseAudio daemon with a null sink: a real capture device for
sounddevice on a machine without a sound card (recipe in docs/design.md).

    with PulseNullSink() as pa:          # sets PULSE_SERVER etc. in os.environ
        pa.play("clip.wav")              # paplay into the sink, in the background
        ... sounddevice records from the 'default' input (the sink's monitor) ...
        pa.suspend(True); pa.suspend(False)   # callbacks stop / resume
        pa.kill(); pa.start()                 # the device disappears / returns

HOME and XDG_RUNTIME_DIR point at a private folder so the daemon never touches a
user's session (and several test runs on one machine do not share a daemon). The
environment is set in this process *before* PortAudio initialises, because
PortAudio's ALSA "pulse"/"default" devices read it then.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

SINK = "vsink"


def available() -> Optional[str]:
    """None when pulseaudio and pactl are installed, else what is missing."""
    missing = [b for b in ("pulseaudio", "pactl", "paplay") if shutil.which(b) is None]
    return ", ".join(missing) + " not installed (make system-deps)" if missing else None


class PulseNullSink:
    def __init__(self, root: Optional[str | Path] = None, rate: int = 48000) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="edge-mla-pulse-"))
        self.rate = rate
        self.env = {
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "xdg"),
            "PULSE_SERVER": f"unix:{self.root / 'xdg' / 'pulse' / 'native'}",
        }
        self._saved: dict = {}
        self._players: list = []

    def _run(self, *args: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
        env = dict(os.environ, **self.env)
        p = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def start(self) -> "PulseNullSink":
        why = available()
        if why:
            raise RuntimeError(why)
        (self.root / "home").mkdir(parents=True, exist_ok=True)
        xdg = self.root / "xdg"
        xdg.mkdir(parents=True, exist_ok=True)
        os.chmod(xdg, 0o700)
        # -n: no default.pa (no hardware probing); load exactly what we need
        self._run("pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disallow-exit=no", "--use-pid-file=yes",
                  "-L", "module-native-protocol-unix", "-L", "module-always-sink", check=True)
        deadline = time.monotonic() + 10
        while self._run("pactl", "info", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("pulseaudio did not come up within 10 s")
            time.sleep(0.1)
        self._run("pactl", "load-module", "module-null-sink", f"sink_name={SINK}", f"rate={self.rate}")
        self._run("pactl", "set-default-sink", SINK)
        self._run("pactl", "set-default-source", f"{SINK}.monitor")
        log.info("pulseaudio null sink up in %s", self.root)
        return self

    def __enter__(self) -> "PulseNullSink":
        for k, v in self.env.items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        try:
            return self.start()
        except Exception:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        self.stop_players()
        self.kill()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(self.root, ignore_errors=True)

    def play(self, wav: str | Path) -> subprocess.Popen:
        """Start paplay of ``wav`` into the sink (returns at once)."""
        p = subprocess.Popen(["paplay", f"--device={SINK}", str(wav)], env=dict(os.environ, **self.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._players.append(p)
        return p

    def stop_players(self) -> None:
        for p in self._players:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
        self._players.clear()

    def suspend(self, on: bool) -> None:
        """Suspend the sink (and so its monitor): capture callbacks stop, no error,
        like an unplugged USB mic."""
        self._run("pactl", "suspend-sink", SINK, "1" if on else "0")

    def freeze(self, on: bool) -> None:
        """Stop (SIGSTOP) or continue the daemon: a hung sound server, alive but not
        answering, where PortAudio calls block instead of failing."""
        import signal

        pid = int((self.root / "xdg" / "pulse" / "pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP if on else signal.SIGCONT)

    def kill(self) -> None:
        """Stop the daemon (the capture device disappears)."""
        if self._run("pactl", "info", check=False).returncode == 0:
            self._run("pulseaudio", "--kill", check=False)
            deadline = time.monotonic() + 5
            while self._run("pactl", "info", check=False).returncode == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
