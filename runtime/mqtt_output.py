"""Decisions to an MQTT broker (paho-mqtt 2.x), through an on-disk spool.

Every decision gets the next per-station sequence number (``"seq"``, persisted in
the spool, so it keeps growing across restarts) and goes into the spool first; one
sender thread publishes the spool in order (QoS 1 by default) and deletes a message
only when the broker acknowledged it. So a broker that is down, restarting or
unreachable at start costs no decisions: they wait on disk (bounded, oldest
dropped and counted) and go out in order on reconnect. A message whose PUBACK was
lost in a disconnect is sent again: consumers drop duplicates by ``seq``.

``TOPIC/status`` is retained: ``online`` after each connect, ``offline`` on a clean
stop and as the last will (the broker publishes it when the runtime dies).

``write`` (called on the fusion thread) only serialises and appends to a deque: no
I/O on the decision path.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.config import DEFAULT_STATION

log = logging.getLogger(__name__)

WINDOW = 200  # messages in flight (published, not yet acknowledged)
NO_ANSWER_S = 5.0  # no CONNACK this long after the start: say so (a port that accepts TCP but is no broker was silent)
STATUS_ONLINE, STATUS_OFFLINE = "online", "offline"


@dataclass
class MqttTarget:
    """A parsed ``--mqtt`` URL."""

    tls: bool
    host: str
    port: int
    topic: str

    def status_topic(self, station: str = DEFAULT_STATION) -> str:
        """``TOPIC/status`` for the one station of a plain run; ``TOPIC/status/STATION``
        for the named stations of a --config file, so stations publishing to one topic
        each keep their own retained online/offline (and last will)."""
        return f"{self.topic}/status" if station == DEFAULT_STATION else f"{self.topic}/status/{station}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://HOST[:PORT]/TOPIC`` or ``mqtts://...``; one clear line otherwise."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise EdgeMlaError(f"--mqtt {url}: malformed URL ({exc})") from None
    if u.scheme not in ("mqtt", "mqtts"):
        raise EdgeMlaError(f"--mqtt {url}: the URL must start with mqtt:// or mqtts://")
    if not u.hostname:
        raise EdgeMlaError(f"--mqtt {url}: no broker host (mqtt://HOST:PORT/TOPIC)")
    if u.username is not None or u.password is not None:
        raise EdgeMlaError(f"--mqtt {url}: credentials in the URL are not used; pass --mqtt-username and --mqtt-password-file")
    if port == 0:
        raise EdgeMlaError(f"--mqtt {url}: port 0 is not a broker port (1-65535)")
    try:
        u.hostname.encode("idna")  # what the socket layer will do, in paho's thread, with no one to tell
    except UnicodeError:
        raise EdgeMlaError(f"--mqtt {url}: {u.hostname!r} is not a valid host name") from None
    topic = u.path.lstrip("/")
    if not topic or any(c in topic for c in "+#") or topic.endswith("/"):
        raise EdgeMlaError(f"--mqtt {url}: give a topic without wildcards after the host (mqtt://HOST:PORT/TOPIC)")
    mqtt_string(topic, "--mqtt", "topic", reserve=len("/status/") + 64)  # room for the status topic of any station name
    tls = u.scheme == "mqtts"
    return MqttTarget(tls, u.hostname, port or (8883 if tls else 1883), topic)


MQTT_STRING_MAX = 65535  # bytes: MQTT strings carry a 16-bit length


def mqtt_string(value: str, option: str, what: str, reserve: int = 0) -> None:
    """``value`` can go into an MQTT packet: UTF-8 without NUL, under the protocol's
    string limit. Why checked here: paho raised in its own thread (struct.error,
    UnicodeEncodeError) and MQTT was silently dead for the rest of the run."""
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise EdgeMlaError(f"{option}: the {what} holds bytes that are not UTF-8 text") from None
    if "\x00" in value:
        raise EdgeMlaError(f"{option}: the {what} holds a NUL character")
    if n + reserve > MQTT_STRING_MAX:
        raise EdgeMlaError(f"{option}: the {what} is {n} bytes; MQTT allows {MQTT_STRING_MAX - reserve}")


def default_spool_path(station: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "edge-mla" / f"spool-{station}.db"


def _read_password(path: Path) -> str:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeMlaError(f"--mqtt-password-file {path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    return text.splitlines()[0] if text else ""


def _check_ca(path: Path) -> None:
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise EdgeMlaError(f"--mqtt-ca {path}: cannot load as a PEM CA certificate ({exc})") from None


class MqttOutput:
    """An output (``write``/``close``) publishing to ``cfg.mqtt``; ``start()`` connects."""

    def __init__(self, cfg) -> None:
        import paho.mqtt.client as mqtt

        self.target = parse_mqtt_url(cfg.mqtt)
        self.station = cfg.station
        self.qos = int(cfg.mqtt_qos)
        self.required = bool(cfg.mqtt_required)
        if cfg.mqtt_ca is not None and not self.target.tls:
            raise EdgeMlaError(f"--mqtt-ca {cfg.mqtt_ca}: only for an mqtts:// URL (got {cfg.mqtt})")
        password = _read_password(cfg.mqtt_password_file) if cfg.mqtt_password_file is not None else None
        if cfg.mqtt_ca is not None:
            _check_ca(cfg.mqtt_ca)
        # one client id per station: a broker disconnects the older of two clients with the same id
        base_id = cfg.mqtt_client_id or f"edge-mla-{socket.gethostname()}"
        self.client_id = cfg.mqtt_client_id if cfg.mqtt_client_id and self.station == DEFAULT_STATION else f"{base_id}-{self.station}"
        mqtt_string(self.client_id, "--mqtt-client-id", "client id")
        if cfg.mqtt_username is not None:
            mqtt_string(cfg.mqtt_username, "--mqtt-username", "user name")
        if password is not None:
            mqtt_string(password, "--mqtt-password-file", "password")
        from edge_mla.runtime.spool import Spool

        spool_path = cfg.mqtt_spool or default_spool_path(self.station)
        try:
            self.spool = Spool(spool_path, cfg.mqtt_spool_max, self.station)
        except Exception as exc:
            raise EdgeMlaError(f"--mqtt-spool {spool_path}: cannot open the spool ({exc})") from None
        self._seq = self.spool.last_seq
        self.status_topic = self.target.status_topic(self.station)
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True, protocol=mqtt.MQTTv311)
        if cfg.mqtt_username is not None or password is not None:
            c.username_pw_set(cfg.mqtt_username, password)
        if self.target.tls:
            c.tls_set(ca_certs=str(cfg.mqtt_ca) if cfg.mqtt_ca else None)
        c.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=8)
        c.max_inflight_messages_set(WINDOW)
        c.on_connect, c.on_disconnect, c.on_publish, c.on_connect_fail = self._on_connect, self._on_disconnect, self._on_publish, self._on_connect_fail
        self._mqtt = mqtt
        self._in: collections.deque = collections.deque()  # (seq, payload) not yet in the spool
        self._acks: collections.deque = collections.deque()  # mids acknowledged
        self._inflight: dict = {}  # mid -> spool id
        self._last_id = 0
        self._resend = True
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._first_failure_logged = False
        self._started_at = time.monotonic()
        self._last_error = ""
        self.published = 0  # acknowledged by the broker
        self.connects = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)

    # -- the runtime's side ------------------------------------------------------
    def start(self, connect_timeout: float = 5.0) -> None:
        """Connect in the background; with ``mqtt_required`` wait for the broker and
        raise EdgeMlaError if it cannot be reached."""
        try:
            self.client.connect_async(self.target.host, self.target.port, keepalive=15)
        except Exception as exc:
            raise EdgeMlaError(f"--mqtt {self.target.host}:{self.target.port}: {exc}") from None
        self._started_at = time.monotonic()
        self.client.loop_start()
        self._thread.start()
        if self.required and not self._connected.wait(connect_timeout):
            self.close(flush=0.0)
            raise EdgeMlaError(f"--mqtt {self.target.host}:{self.target.port}: cannot reach the broker within {connect_timeout:.0f}s ({self._last_error or 'no answer'}) and --mqtt-required is set")

    def write(self, record: dict) -> None:
        self._seq += 1
        payload = json.dumps({"seq": self._seq, "station": self.station, **record}, separators=(",", ":"))
        self._in.append((self._seq, payload))
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def spool_depth(self) -> int:
        return self.spool.depth + len(self._in)

    @property
    def spool_dropped(self) -> int:
        return self.spool.dropped

    def close(self, flush: float = 3.0) -> None:
        """Send what is queued for up to ``flush`` s (while connected), publish
        ``offline`` and disconnect; the rest stays in the spool for the next start."""
        deadline = time.monotonic() + flush
        while self.connected and (self._in or self.spool.depth) and time.monotonic() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.02)
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        if self.connected:
            try:
                self.client.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True).wait_for_publish(1.0)
            except Exception:
                log.debug("mqtt: offline status not sent", exc_info=True)
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()
        if self.spool.depth:
            log.info("mqtt: %d decisions left in the spool %s for the next start", self.spool.depth, self.spool.path)

    # -- paho callbacks (its network thread) ----------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = str(reason_code)
            self._log_failure_once(f"broker refused the connection: {reason_code}")
            return
        self.connects += 1
        client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
        self._resend = True
        self._connected.set()
        log.info("mqtt: connected to %s:%d as %s", self.target.host, self.target.port, self.client_id)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._resend = True
        if was and not self._closing.is_set():
            log.warning("mqtt: disconnected (%s); spooling until the broker is back", reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._last_error = "connection failed"
        self._log_failure_once("cannot reach the broker")

    def _log_failure_once(self, why: str) -> None:
        if not self._first_failure_logged:
            self._first_failure_logged = True
            log.warning("mqtt: %s:%d: %s; decisions are spooled to %s until it answers", self.target.host, self.target.port, why, self.spool.path)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.append(mid)
        self._wake.set()

    # -- the sender thread --------------------------------------------------------------
    def _drain(self, dq: collections.deque) -> list:
        out = []
        while dq:
            out.append(dq.popleft())
        return out

    def _run(self) -> None:
        while True:
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._step()
            except Exception:
                self.errors += 1
                log.exception("mqtt sender: step failed")
                time.sleep(0.5)
            if self._closing.is_set() and not self._in:
                break

    def _step(self) -> None:
        if not self._first_failure_logged and not self._connected.is_set() and self.connects == 0 and time.monotonic() - self._started_at > NO_ANSWER_S:
            self._log_failure_once(f"no MQTT answer within {NO_ANSWER_S:.0f}s ({self._last_error or 'the port takes connections but no broker replied'})")
        batch = self._drain(self._in)
        if batch:
            dropped = self.spool.push(batch)
            if dropped:
                log.warning("mqtt: spool full (%d); dropped the %d oldest decisions", self.spool.max_messages, dropped)
        acked = [self._inflight.pop(m) for m in self._drain(self._acks) if m in self._inflight]
        self.spool.ack(acked)
        self.published += len(acked)
        if not self._connected.is_set() or self._closing.is_set():
            return
        if self._resend:  # after a (re)connect: everything unacknowledged, from the oldest
            self._resend = False
            self._inflight.clear()
            self._last_id = 0
        room = WINDOW - len(self._inflight)
        if room <= 0:
            return
        for sid, _seq, payload in self.spool.pending(self._last_id, room):
            info = self.client.publish(self.target.topic, payload, qos=self.qos)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                self._resend = True
                return
            self._inflight[info.mid] = sid
            self._last_id = sid
