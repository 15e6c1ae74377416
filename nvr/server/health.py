"""A server's health: the alarms an operator must act on, and the status document of every part."""

from __future__ import annotations

from typing import Any

from nvr import __version__

NvrServer = Any  # nvr.server.app.NvrServer, which imports this module


def alarms(srv: NvrServer) -> list[str]:
    """Everything an operator must act on now, each in words that name the cause."""
    assert srv.recorders is not None and srv.ingest is not None and srv.spoolwatch is not None
    ing = srv.ingest
    out: list[str] = []
    for owner in srv.tasks:
        for st in owner.states().values():
            if st.gave_up:
                out.append(f"{owner.owner}: {st.name} stopped for good: {st.last_error}")
            elif not st.running and not st.done and st.last_error:
                out.append(f"{owner.owner}: {st.name} is being restarted after: {st.last_error}")
    if not srv.ledger_ready.is_set():
        gate = next((o.states().get("ledger-gate") for o in srv.tasks if o.owner == "start"), None)
        why = f": {gate.last_error}" if gate and gate.last_error else ""
        out.append(f"uploads not started yet: checking the bucket and the ledger{why}; segments wait in the spool")
    if ing.problem is not None:
        out.append(ing.problem.alarm())
    out += [f"camera {c}: uploads failing: {e}" for c, e in sorted(ing.lane_errors.items())
            if ing.problem is None or e != ing.problem.error]
    if ing.problem is None:
        out += [f"camera {c}: uploads stalled, segments wait in the spool" for c in ing.stalled()]
    out += [f"camera {c}: {p}" for c, p in sorted(srv.recorders.problems().items())]
    if srv.spoolwatch.status.alarm:
        out.append(srv.spoolwatch.status.alarm)
    if srv.checkpoints is not None and (cp := srv.checkpoints.alarm()):
        out.append(cp)
    if srv.retention is not None and srv.retention.alarm:
        out.append(srv.retention.alarm)
    if srv.cluster is not None and (cl := srv.cluster.alarm()):
        out.append(cl)
    fenced = srv.ingest.ingestor.fenced
    if fenced:
        camera, file, why = fenced[-1]
        out.append(f"camera {camera}: {len(fenced)} segment(s) refused by the lease fence and kept in the spool's "
                   f"fenced/ directory, last {file}: {why}")
    return out

def status(srv: NvrServer) -> dict:
    """Health of every part, for the API and the logs."""
    assert srv.recorders is not None and srv.ingest is not None and srv.spoolwatch is not None
    sp = srv.spoolwatch.status
    problem = srv.ingest.problem
    return {
        "version": __version__,
        "node": srv.backend.node_id if srv.backend else None,
        "cameras": {cid: st.as_dict() for cid, st in srv.recorders.statuses().items()},
        "spool": {
            "bytes": sp.bytes, "files": sp.files, "limit_bytes": sp.limit_bytes,
            "free_bytes": sp.free_bytes, "alarm": sp.alarm,
        },
        "storage": {"ok": problem is None, "error": problem.error if problem else None,
                    "cause": str(problem.cause) if problem else None},
        "ingest": {
            "segments": srv.ingest.stats.segments, "bytes": srv.ingest.stats.bytes,
            "errors": srv.ingest.stats.errors, "gaps": srv.ingest.stats.gaps,
            "ready": srv.ledger_ready.is_set(), "stalled": srv.ingest.stalled(),
        },
        "checkpoints": {"alarm": srv.checkpoints.alarm() if srv.checkpoints else None},
        "retention": srv.retention.status() if srv.retention is not None else None,
        "cluster": srv.cluster.status() if srv.cluster is not None else None,
        "alarms": srv.alarms(),
    }
