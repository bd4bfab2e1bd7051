"""Replay: record a scripted session with faults, run the runtime on it, score it.

    from edge_mla.runtime.replay import Script, Fault, default_script, record_session, score
    session = record_session(default_script(), "out/session")        # demo test split
    # edge-mla run --engines ENG --replay out/session --out out/run.jsonl
    result = score("out/run.jsonl", session.truth_path)
    result["spans"]["camera_gone"]["accuracy"], result["recovery"]
"""

from edge_mla.runtime.replay.script import Fault, Script, default_script, degraded_script
from edge_mla.runtime.replay.recorder import Session, load_session, record_session
from edge_mla.runtime.replay.scorer import score

__all__ = ["Fault", "Script", "default_script", "degraded_script", "Session", "load_session", "record_session", "score"]
