"""`edge-mla run`: the streaming runtime on a device (camera + mic -> engines -> fusion).

Imports no torch: only the runtime extra is installed on a device. The flags map
one to one onto edge_mla.runtime.RunConfig; everything else is in the library.
Ctrl-C / SIGTERM stop the runtime cleanly (threads joined, streams closed, output
flushed) and print the summary; the exit status is then 0.
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
    p.add_argument("--engines", required=True, metavar="DIR", help="engine folder written by 'edge-mla export' (manifest.json + engines)")
    p.add_argument("--camera", default="0", help="camera index (0), video file, stream URL (rtsp://, http://), or 'none' (default 0)")
    p.add_argument("--mic", default="default", help="'default', an input device index or name, a WAV file, or 'none' (default: default)")
    p.add_argument("--replay", metavar="SESSION", help="replay a recorded session folder (its video, WAV and scripted outages) instead of --camera/--mic")
    p.add_argument("--precision", choices=["fp32", "int8"], help="engine variant from the manifest (default: the one export chose)")
    p.add_argument("--rate", type=float, default=10.0, help="fused decisions per second (default 10)")
    p.add_argument("--staleness", type=float, default=1.0, help="seconds after which a modality's result is left out (default 1.0)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C / SIGTERM)")
    p.add_argument("--loop", action="store_true", help="loop video/WAV files")
    p.add_argument("--video-rate", type=float, help="run the image engine at most this many times per second (default: every new frame)")
    p.add_argument("--hop", type=float, default=0.25, help="seconds between audio engine runs on the sliding window (default 0.25)")
    p.add_argument("--mic-rate", type=int, default=48000, help="capture rate asked of the mic (default 48000; resampled to the engine rate)")
    p.add_argument("--camera-timeout", type=float, default=2.0, help="seconds without a frame before the camera is marked lost (default 2)")
    p.add_argument("--mic-timeout", type=float, default=1.5, help="seconds without audio before the mic is marked lost (default 1.5)")
    p.add_argument("--blank-threshold", type=float, default=8.0, help="frames whose grey-level std is below this are 'blank' and not classified (default 8; 0: off)")
    p.add_argument("--silence-threshold", type=float, default=0.002, help="audio windows whose RMS (full scale 1.0) is below this are silence and not classified (default 0.002, about -54 dBFS; 0: off)")
    p.add_argument("--out", metavar="FILE", help="write JSON lines to FILE instead of stdout")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--force", dest="out_mode", action="store_const", const="overwrite", help="--out: overwrite an existing file")
    g.add_argument("--append", dest="out_mode", action="store_const", const="append", help="--out: add to an existing file")
    p.add_argument("--console", action="store_true", help="a readable line per decision (on stdout; JSON then needs --out)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per engine (default 1: two engines share 2 cores)")
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
    )
    if args.replay:
        from edge_mla.runtime.replay.recorder import load_session, session_config

        s = load_session(args.replay)
        kw.pop("camera"), kw.pop("mic")
        cam = None if args.camera.lower() == "none" else str(s.video)
        mic = None if args.mic.lower() == "none" else str(s.audio)
        return session_config(s, **kw, **{"camera": cam, "mic": mic})
    return RunConfig(**kw)


def run(args: argparse.Namespace) -> int:
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.app import Runtime
    from edge_mla.runtime.outputs import ConsoleOutput, JsonLinesOutput, format_summary

    cfg = config_from_args(args)
    outputs = []  # opened by the runtime only after every check passed
    if cfg.out is not None:
        outputs.append(JsonLinesOutput(cfg.out, mode=cfg.out_mode))
    elif cfg.json_stdout:
        outputs.append(JsonLinesOutput(None, sys.stdout))
    if cfg.console:
        outputs.append(ConsoleOutput(sys.stdout))
    rt = Runtime(cfg, outputs=outputs)

    def on_signal(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        rt.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rt.start()  # a sensor that cannot open raises EdgeMlaError: one line, exit 2
        try:
            rt.wait(cfg.duration)
        finally:
            report = rt.join()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print(format_summary(report), file=sys.stderr, flush=True)
    if report.output_error:
        raise EdgeMlaError(report.output_error)
    return 0
