"""Background-job load with a ledger of each job's fate, for the durability tests.

Every background job that got JOB_CREATED must run after a restart (at least once);
none that got an ERROR may appear.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from geartrain.protocol.codec import Decoder, Packet, encode_request
from geartrain.protocol.constants import RES
from geartrain.protocol.constants import PacketType as P
from tests.support import admin_command, start_geartrain


@dataclass
class Ledger:
    acked: set[bytes] = field(default_factory=set)
    refused: set[bytes] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def submitter(
    port: int, tag: int, ledger: Ledger, stop: threading.Event, limit: int, pause: float
) -> None:
    """Pipeline background submissions in batches; record each job's fate."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        return
    decoder = Decoder(expect=RES, text=False)
    sent = 0
    try:
        while not stop.is_set() and sent < limit:
            uniques = [b"c%d-%d" % (tag, sent + i) for i in range(50)]
            sent += len(uniques)
            sock.sendall(
                b"".join(encode_request(P.SUBMIT_JOB_BG, b"crash", u, data=u) for u in uniques)
            )
            replies: list[Packet] = []
            while len(replies) < len(uniques):
                chunk = sock.recv(65536)
                if not chunk:
                    return
                replies.extend(e for e in decoder.feed(chunk) if isinstance(e, Packet))
            if pause:
                time.sleep(pause)
            with ledger.lock:
                for unique, reply in zip(uniques, replies, strict=True):
                    if reply.type == P.JOB_CREATED:
                        ledger.acked.add(unique)
                    else:
                        assert reply.type == P.ERROR and reply.args[0] == b"QUEUE_ERROR", reply
                        ledger.refused.add(unique)
    except OSError:
        return  # the server was killed: replies not read are of unknown fate
    finally:
        sock.close()


def drain(port: int, seconds: float = 60) -> list[bytes]:
    """Run every queued 'crash' job once with a raw worker; return their uniques."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    decoder = Decoder(expect=RES, text=False)
    sock.sendall(encode_request(P.CAN_DO, b"crash"))
    seen: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(encode_request(P.GRAB_JOB_UNIQ) * 20)
            packets: list[Packet] = []
            while len(packets) < 20:
                packets.extend(e for e in decoder.feed(sock.recv(65536)) if isinstance(e, Packet))
            done = b"".join(
                encode_request(P.WORK_COMPLETE, p.args[0], data=b"")
                for p in packets
                if p.type == P.JOB_ASSIGN_UNIQ
            )
            seen.extend(p.args[2] for p in packets if p.type == P.JOB_ASSIGN_UNIQ)
            if done:
                sock.sendall(done)
            if any(p.type == P.NO_JOB for p in packets):
                sock.sendall(encode_request(P.ECHO_REQ, data=b"flush"))
                while not any(
                    isinstance(e, Packet) and e.type == P.ECHO_RES
                    for e in decoder.feed(sock.recv(65536))
                ):
                    pass
                return seen
        raise AssertionError("drain did not finish in time")
    finally:
        sock.close()


def run_load(
    port: int,
    ledger: Ledger,
    until: Callable[[], bool],
    clients: int = 4,
    seconds: float = 30,
    limit: int = 4000,
    pause: float = 0.0,
) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=submitter, args=(port, i, ledger, stop, limit, pause))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(0.01)
    return stop, threads


def restart_and_check(port: int, url: str, ledger: Ledger) -> None:
    server = start_geartrain(port=port, queue=url)
    try:
        ran = drain(port)
        missing = ledger.acked - set(ran)
        assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {sorted(missing)[:5]}"
        assert not ledger.refused & set(ran), "a refused job ran"
        assert server.stop() == 0
    finally:
        server.kill()
    # Completed jobs are gone from the store too: nothing comes back a third time.
    server = start_geartrain(port=port, queue=url)
    try:
        assert admin_command(port, b"status") in (b".\n", b"crash\t0\t0\t0\n.\n")
    finally:
        server.stop()
