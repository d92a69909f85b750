"""Coverage-guided fuzzing of the protocol decoder with atheris.

Usage::

    pip install atheris
    python fuzz/fuzz_decoder.py -max_total_time=60 -max_len=65536 -len_control=0 [corpus]

Inputs must be allowed past MAX_ADMIN_LINE (8 KiB) to reach the admin line limit,
hence ``-max_len``; ``-len_control=0`` lets libFuzzer use that length from the start.

The first bytes of each input choose the decoder (server or client side, body size
limit) and a read size; the rest is the stream. For every input the harness checks
what the unit tests check on generated input:

* ``feed()`` never raises, and returns only Packet, AdminLine and BadPacket;
* nothing follows a fatal BadPacket, and a dead decoder stays silent;
* the events are the same whether the stream arrives in one read or in many;
* ``buffered`` never exceeds the bytes fed, and is 0 after a fatal error;
* every Packet re-encodes to bytes that decode to the same Packet.

Any failed check raises, which atheris reports together with the input.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from geartrain.protocol.codec import AdminLine, BadPacket, Decoder, Event, Packet, encode
    from geartrain.protocol.constants import MAX_PACKET_TYPE, REQ, RES

#: Large enough to reach the collecting path of the decoder, small enough that a
#: header announcing a large body costs little memory per input.
MAX_SIZE_LIMIT = 1 << 20

SIDES = ((REQ, True), (RES, False), (REQ, False))


def plain(event: Event) -> Event:
    if isinstance(event, Packet) and not isinstance(event.data, bytes):
        return event._replace(data=bytes(event.data))
    return event


def decode_all(decoder: Decoder, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    fed = 0
    for chunk in chunks:
        events.extend(plain(e) for e in decoder.feed(chunk))
        fed += len(chunk)
        if decoder.buffered > fed:
            raise AssertionError(f"buffered {decoder.buffered} > fed {fed}")
    return events


def check_shape(events: list[Event]) -> None:
    for i, event in enumerate(events):
        if isinstance(event, BadPacket):
            if event.fatal and i != len(events) - 1:
                raise AssertionError("event after a fatal BadPacket")
        elif isinstance(event, Packet):
            if not 1 <= event.type <= MAX_PACKET_TYPE:
                raise AssertionError(f"packet of type {event.type}")
        elif not isinstance(event, AdminLine) or b"\n" in event.line:
            raise AssertionError(f"unexpected event {event!r}")


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    magic, text = SIDES[fdp.ConsumeIntInRange(0, len(SIDES) - 1)]
    max_size = fdp.ConsumeIntInRange(0, MAX_SIZE_LIMIT)
    step = fdp.ConsumeIntInRange(1, 512)
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())

    whole_decoder = Decoder(expect=magic, max_size=max_size, text=text)
    whole = decode_all(whole_decoder, [stream])
    check_shape(whole)

    chunked_decoder = Decoder(expect=magic, max_size=max_size, text=text)
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    chunked = decode_all(chunked_decoder, chunks)
    if chunked != whole:
        raise AssertionError(f"read size {step} changed the events:\n{whole}\n{chunked}")
    if chunked_decoder.buffered != whole_decoder.buffered:
        raise AssertionError("read size changed buffered")

    dead = bool(whole) and isinstance(whole[-1], BadPacket) and whole[-1].fatal
    if dead and (whole_decoder.buffered != 0 or whole_decoder.feed(stream or b"\0")):
        raise AssertionError("decoder not silent after a fatal error")

    for event in whole:
        if isinstance(event, Packet):
            again = encode(event.type, *event.args, data=event.data, magic=magic)
            redecoded = [plain(e) for e in Decoder(expect=magic, text=text).feed(again)]
            if redecoded != [event]:
                raise AssertionError(f"re-encoding {event!r} decoded as {redecoded!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
