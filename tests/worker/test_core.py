"""The sans-I/O worker state: grab/sleep cycle and capacity over several connections."""

from __future__ import annotations

from geartrain.protocol import PacketType
from geartrain.protocol.codec import Decoder, Packet, encode
from geartrain.worker.job import outcome, timeout_ms
from geartrain.worker.protocol import Assignment, ConnState, ServerMessage, WorkerState

P = PacketType


def sent(state: WorkerState, key: str) -> list[tuple[int, tuple[bytes, ...]]]:
    data = state.connections[key].data_to_send()
    decoder = Decoder(expect=b"\0REQ", text=False)
    packets = [p for p in decoder.feed(data) if isinstance(p, Packet)]
    return [(p.type, p.args) for p in packets]


def test_fresh_connection_introduces_itself_and_grabs() -> None:
    state = WorkerState(client_id="me")
    state.register(b"slow", 2500)
    state.register(b"fast")
    state.connection_made("a")
    assert sent(state, "a") == [
        (P.SET_CLIENT_ID, (b"me",)),
        (P.CAN_DO_TIMEOUT, (b"slow", b"2500")),
        (P.CAN_DO, (b"fast",)),
        (P.GRAB_JOB_UNIQ, ()),
    ]
    assert state.connections["a"].state is ConnState.GRABBING


def test_no_job_pre_sleep_noop_grab_cycle() -> None:
    state = WorkerState()
    state.register(b"f")
    state.connection_made("a")
    sent(state, "a")
    assert state.receive_data("a", encode(P.NO_JOB)) == []
    assert sent(state, "a") == [(P.PRE_SLEEP, ())]
    assert state.connections["a"].state is ConnState.SLEEPING
    state.receive_data("a", encode(P.NOOP))
    assert sent(state, "a") == [(P.GRAB_JOB_UNIQ, ())]
    [job] = state.receive_data("a", encode(P.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"u", data=b"x\0y"))
    assert job == Assignment("a", b"H:1", b"f", b"u", b"x\0y")
    # Capacity 1 is used up: no new grab until the job ends.
    assert sent(state, "a") == []
    assert isinstance(job, Assignment)
    state.finish(job, P.WORK_COMPLETE, b"ok")
    assert sent(state, "a") == [(P.WORK_COMPLETE, (b"H:1",)), (P.GRAB_JOB_UNIQ, ())]


def test_work_fail_body_is_exactly_the_handle() -> None:
    state = WorkerState()
    state.register(b"f")
    state.connection_made("a")
    sent(state, "a")
    [job] = state.receive_data("a", encode(P.JOB_ASSIGN, b"H:7", b"f", data=b""))
    assert isinstance(job, Assignment) and job.unique == b""
    state.finish(job, P.WORK_FAIL)
    wire = state.connections["a"].data_to_send()
    assert wire[12 : 12 + int.from_bytes(wire[8:12], "big")] == b"H:7"


def test_capacity_is_shared_across_connections() -> None:
    state = WorkerState(capacity=2)
    state.register(b"f")
    for key in ("a", "b", "c"):
        state.connection_made(key)
    grabs = {k: sent(state, k).count((P.GRAB_JOB_UNIQ, ())) for k in ("a", "b", "c")}
    assert sum(grabs.values()) == 2  # never more grabs out than free slots
    first = next(k for k, n in grabs.items() if n)
    [job] = state.receive_data(first, encode(P.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"", data=b""))
    assert isinstance(job, Assignment)
    assert len(state.running) == 1


def test_limit_stops_grabbing_and_lost_connection_orphans_jobs() -> None:
    state = WorkerState(capacity=3)
    state.limit = 1
    state.register(b"f")
    state.connection_made("a")
    assert sent(state, "a").count((P.GRAB_JOB_UNIQ, ())) == 1
    [job] = state.receive_data("a", encode(P.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"", data=b""))
    assert isinstance(job, Assignment)
    assert state.limit == 0 and sent(state, "a") == []
    assert state.connection_lost("a") == [job]
    assert not state.finish(job, P.WORK_COMPLETE)


def test_wake_regrabs_sleeping_connections_and_errors_are_reported() -> None:
    state = WorkerState()
    state.register(b"f")
    state.connection_made("a")
    sent(state, "a")
    state.receive_data("a", encode(P.NO_JOB))
    sent(state, "a")
    state.wake()
    assert sent(state, "a") == [(P.GRAB_JOB_UNIQ, ())]
    events = state.receive_data("a", encode(P.ERROR, b"JOB_NOT_FOUND", b"gone"))
    assert events == [ServerMessage("a", b"JOB_NOT_FOUND", b"gone")]


def test_outcome_and_timeout_conversion() -> None:
    assert outcome(b"x") == (P.WORK_COMPLETE, b"x")
    assert outcome("é") == (P.WORK_COMPLETE, "é".encode())
    assert outcome(None) == (P.WORK_COMPLETE, b"")
    assert outcome(error=ValueError("v")) == (P.WORK_EXCEPTION, b"ValueError: v")
    assert outcome(error=ValueError("v"), exceptions=False) == (P.WORK_FAIL, b"")
    assert outcome(42)[0] == P.WORK_EXCEPTION  # not bytes: reported, not crashed
    assert timeout_ms(None) == 0 and timeout_ms(1.5) == 1500 and timeout_ms(0.0001) == 1
