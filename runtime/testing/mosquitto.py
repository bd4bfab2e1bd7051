"""A private Mosquitto broker on a free loopback port (tests and benchmarks).

Started from a generated config (``listener PORT 127.0.0.1``, anonymous access,
no persistence), so neither the system service nor /etc/mosquitto is involved. It
can be stopped and started again on the same port, which is how the tests take
the broker away in the middle of a run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from edge_mla.runtime.testing.mjpeg import free_port


def mosquitto_binary() -> Optional[str]:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)


class MosquittoBroker:
    def __init__(self, port: Optional[int] = None, users: Optional[dict] = None, tls: bool = False) -> None:
        """``users`` {name: password}: anonymous access off, these accounts only.
        ``tls``: the listener speaks TLS with a certificate from a CA made here
        (``ca_file``), for 127.0.0.1 and localhost."""
        exe = mosquitto_binary()
        if exe is None:
            raise RuntimeError("mosquitto not installed (apt-get install mosquitto; `make` installs it)")
        self.exe = exe
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="edge-mla-mosquitto-"))
        self.conf = self._dir / "mosquitto.conf"
        # as root, mosquitto switches to the "mosquitto" user, which cannot read this
        # private folder: stay the user who started it (a test broker on loopback)
        lines = [f"user {pwd.getpwuid(os.geteuid()).pw_name}"] if os.geteuid() == 0 else []
        lines += [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}", "persistence true", f"persistence_location {self._dir}/", f"log_dest file {self._dir / 'broker.log'}", "max_queued_messages 100000"]
        if users:
            pw = self._dir / "passwords"
            pw.write_text("")
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), name, password], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        self.ca_file: Optional[Path] = None
        if tls:
            self.ca_file = self._make_certificates()
            lines += [f"cafile {self.ca_file}", f"certfile {self._dir / 'server.pem'}", f"keyfile {self._dir / 'server.key'}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: Optional[subprocess.Popen] = None

    def _make_certificates(self) -> Path:
        """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI)."""
        d = self._dir

        def ossl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-mla test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        ossl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"), "-out", str(d / "server.pem"))
        for f in ("server.key", "server.pem", "ca.pem"):
            (d / f).chmod(0o644)
        return d / "ca.pem"

    @property
    def url_base(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "MosquittoBroker":
        self._proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}; log: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def log(self) -> str:
        f = self._dir / "broker.log"
        return f.read_text()[-2000:] if f.is_file() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Subscriber:
    """A real paho client collecting every message on ``topic`` (QoS 1, persistent
    session: what is published while it reconnects waits for it on the broker)."""

    def __init__(self, port: int, topic: str, client_id: str = "edge-mla-test-sub", username: Optional[str] = None, password: Optional[str] = None, ca_file: Optional[Path] = None) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list = []  # (topic, payload bytes, retain)
        self._lock = threading.Lock()
        self.topic = topic
        self.connected = threading.Event()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe([(topic, 1), (f"{topic}/status", 1), (f"{topic}/status/#", 1)]), self.connected.set())
        c.on_disconnect = lambda cl, u, f, rc, p: self.connected.clear()
        c.on_message = self._on_message
        if username is not None:
            c.username_pw_set(username, password)
        if ca_file is not None:
            c.tls_set(ca_certs=str(ca_file))
        c.reconnect_delay_set(0.2, 1)
        c.connect_async("127.0.0.1", port, keepalive=10)
        c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def payloads(self, topic: str) -> list:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
