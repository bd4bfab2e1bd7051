"""`edge-mla run`: the streaming runtime on a device (camera + mic -> engines -> fusion).

Imports no torch: only the runtime extra is installed on a device. The flags map
one to one onto edge_mla.runtime.RunConfig; everything else is in the library.
Ctrl-C / SIGTERM stop the runtime cleanly (threads joined, streams closed, output
flushed) and print the summary; the exit status is then 0. SIGHUP swaps in the
engine folder's current contents (checked first; a bad folder is refused).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

log = logging.getLogger(__name__)


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "run",
        parents=[common],
        help="run the engines on a camera and a microphone",
        description="Run the exported engines on a live camera + microphone (or files, or a recorded replay session) "
        "and print fused decisions as JSON lines.",
    )
    p.add_argument("--engines", metavar="DIR", help="engine folder written by 'edge-mla export' (manifest.json + engines); required unless --config sets it")
    p.add_argument("--config", metavar="FILE.toml", help="run several stations from a TOML file: [runtime] holds any option of this command by its long name, each [[station]] a name, camera, mic and any override (see README)")
    p.add_argument("--camera", default="0", help="camera index (0), video file, stream URL (rtsp://, http://), or 'none' (default 0)")
    p.add_argument("--mic", default="default", help="'default', an input device index or name, a WAV file, or 'none' (default: default)")
    p.add_argument("--replay", metavar="SESSION", help="replay a recorded session folder (its video, WAV and scripted outages) instead of --camera/--mic")
    p.add_argument("--precision", choices=["fp32", "int8"], help="engine variant from the manifest (default: the one export chose)")
    p.add_argument("--rate", type=float, default=10.0, help="decisions are made as each fresh engine result arrives; this caps how many per second each modality may trigger (a 30 fps camera: at most RATE; the mic's results, one per --hop, each trigger one) (default 10)")
    p.add_argument("--staleness", type=float, default=1.0, help="seconds after which a modality's result is left out (default 1.0)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C / SIGTERM)")
    p.add_argument("--loop", action="store_true", help="loop video/WAV files")
    p.add_argument("--video-rate", type=float, help="run the image engine on a clock at this many Hz (default: on frames as they arrive, at most --rate times per second)")
    p.add_argument("--hop", type=float, default=0.25, help="seconds between audio engine runs on the sliding window (default 0.25)")
    p.add_argument("--mic-rate", type=int, default=48000, help="capture rate asked of the mic (default 48000; resampled to the engine rate)")
    p.add_argument("--camera-timeout", type=float, default=2.0, help="seconds without a frame before the camera is marked lost (default 2)")
    p.add_argument("--mic-timeout", type=float, default=1.5, help="seconds without audio before the mic is marked lost (default 1.5)")
    p.add_argument("--blank-threshold", type=float, default=8.0, help="frames whose grey-level std is below this are 'blank' and not classified (default 8; 0: off)")
    p.add_argument("--silence-threshold", type=float, default=0.002, help="audio windows whose RMS (full scale 1.0) is below this are silence and not classified (default 0.002, about -54 dBFS; 0: off)")
    p.add_argument("--degraded-hold", type=float, default=1.0, help="seconds a live sensor must keep being judged unreliable by its engine's reliability output before it is reported 'degraded' (and reliable again before 'ok') (default 1.0)")
    p.add_argument("--require-reliability", action="store_true", help="refuse an engine folder exported without the reliability output (default: warn and fuse by the recorded rule alone)")
    p.add_argument("--out", metavar="FILE", help="write JSON lines to FILE instead of stdout")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--force", dest="out_mode", action="store_const", const="overwrite", help="--out: overwrite an existing file")
    g.add_argument("--append", dest="out_mode", action="store_const", const="append", help="--out: add to an existing file")
    p.add_argument("--console", action="store_true", help="a readable line per decision (on stdout; JSON then needs --out)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per engine (default 1: two engines share 2 cores)")
    from edge_mla.runtime.flags import add_run_config_flags

    add_run_config_flags(p)  # issue 10: MQTT, metrics, clips, hot swap, boot order
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """Map the flags onto a RunConfig (one place, so library and CLI agree)."""
    from edge_mla.runtime.config import RunConfig

    kw = dict(
        engines=args.engines,
        camera=args.camera,
        mic=args.mic,
        precision=args.precision,
        rate=args.rate,
        staleness=args.staleness,
        duration=args.duration,
        loop=args.loop,
        video_rate=args.video_rate,
        hop=args.hop,
        mic_rate=args.mic_rate,
        camera_timeout=args.camera_timeout,
        mic_timeout=args.mic_timeout,
        blank_threshold=args.blank_threshold,
        silence_threshold=args.silence_threshold,
        out=args.out,
        out_mode=args.out_mode or "new",
        json_stdout=not args.console,
        console=args.console,
        intra_op_threads=args.threads,
        degraded_hold=args.degraded_hold,
        require_reliability=args.require_reliability,
    )
    from edge_mla.runtime.flags import run_config_values

    kw.update(run_config_values(args))
    if args.replay:
        from edge_mla.runtime.replay.recorder import load_session, session_config

        s = load_session(args.replay)
        kw.pop("camera"), kw.pop("mic")
        cam = None if args.camera.lower() == "none" else str(s.video)
        mic = None if args.mic.lower() == "none" else str(s.audio)
        return session_config(s, **kw, **{"camera": cam, "mic": mic})
    return RunConfig(**kw)


# Options that name one station's sensors: per station in a --config file.
STATION_ONLY = ("camera", "mic", "replay")
# Options the whole process shares: the same for every station of a --config file
# (metrics: one /metrics and /healthz endpoint per process, every station on it).
PROCESS_WIDE = ("out", "json_stdout", "console", "duration", "metrics", "health_window")


def stations_from_args(args: argparse.Namespace) -> tuple:
    """``--config FILE``: (stations, the process-wide RunConfig). Flags typed on the
    command line with a non-default value are the base the file's values override."""
    from dataclasses import MISSING, fields

    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.stations import read_stations

    for name in STATION_ONLY:
        if getattr(args, name) not in (None, "0", "default"):
            raise EdgeMlaError(f"--{name} cannot be combined with --config: name each station's sensors in {args.config}")
    probe = argparse.Namespace(**{**vars(args), "engines": args.engines or ".", "replay": None})
    typed = vars(config_from_args(probe))
    defaults = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
    base = {k: v for k, v in typed.items() if k not in ("camera", "mic", "engines") and k in defaults and v != defaults[k]}
    if args.engines:
        base["engines"] = args.engines
    stations = read_stations(args.config, base)
    first = stations[0].cfg
    for st in stations[1:]:
        for name in PROCESS_WIDE:
            if getattr(st.cfg, name) != getattr(first, name):
                raise EdgeMlaError(f"{args.config}: station {st.name}: {name} is process-wide; set it in [runtime] or on the command line, not per station")
    return stations, first


def run(args: argparse.Namespace) -> int:
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.app import Runtime
    from edge_mla.runtime.outputs import ConsoleOutput, JsonLinesOutput, format_summary

    stations = None
    if args.config:
        stations, cfg = stations_from_args(args)
    elif not args.engines:
        raise EdgeMlaError("--engines DIR is required (or --config FILE.toml naming the engines)")
    else:
        cfg = config_from_args(args)
    outputs = []  # opened by the runtime only after every check passed
    if cfg.out is not None:
        outputs.append(JsonLinesOutput(cfg.out, mode=cfg.out_mode))
    elif cfg.json_stdout:
        outputs.append(JsonLinesOutput(None, sys.stdout))
    if cfg.console:
        outputs.append(ConsoleOutput(sys.stdout))
    if stations is not None:
        from edge_mla.runtime.multi import MultiRuntime, format_multi_summary

        rt = MultiRuntime(stations, outputs=outputs)
    else:
        rt = Runtime(cfg, outputs=outputs)

    stopping = []

    def on_signal(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stopping.append(signum)
        rt.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: rt.reload())  # hot engine swap
    try:
        try:
            rt.start()  # a sensor that cannot open raises EdgeMlaError: one line, exit 2
        except EdgeMlaError:
            if stopping:  # stopped while a stream was still opening (start cleaned up): an interrupt, not a camera error
                raise KeyboardInterrupt from None
            raise
        try:
            rt.wait(cfg.duration)
        finally:
            report = rt.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    multi = stations is not None
    print(format_multi_summary(report, format_summary) if multi else format_summary(report), file=sys.stderr, flush=True)
    errors = [r.output_error for r in report.stations.values() if r.output_error] if multi else [report.output_error] if report.output_error else []
    if errors:
        raise EdgeMlaError(errors[0])
    return 0
