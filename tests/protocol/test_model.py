"""A stateful model check of the decoder.

The model is the stream itself: every message queued knows the offset where it ends,
so after any sequence of reads of any size the decoder must have returned exactly the
messages that end within the bytes delivered, and must report the rest as buffered.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from geartrain.protocol.codec import Decoder, Event
from geartrain.protocol.constants import REQ, RES

from .helpers import check_event_shape
from .strategies import Message, comparable, messages


class DecoderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.decoder = Decoder(expect=REQ)
        self.stream = b""
        self.delivered = 0
        self.expected: list[tuple[int, Event]] = []
        self.received: list[Event] = []

    @rule(message=messages(REQ, text=True, large=True))
    def queue(self, message: Message) -> None:
        self.stream += message.wire
        self.expected.append((len(self.stream), message.event))

    @precondition(lambda self: self.delivered < len(self.stream))
    @rule(size=st.integers(1, 64) | st.integers(1, 20_000))
    def deliver(self, size: int) -> None:
        chunk = self.stream[self.delivered : self.delivered + size]
        self.delivered += len(chunk)
        self.received.extend(self.decoder.feed(chunk))

    @rule()
    def deliver_nothing(self) -> None:
        assert self.decoder.feed(b"") == []

    @rule()
    def deliver_everything(self) -> None:
        self.deliver(len(self.stream))

    def complete(self) -> list[tuple[int, Event]]:
        return [(end, e) for end, e in self.expected if end <= self.delivered]

    @invariant()
    def returned_exactly_the_complete_messages(self) -> None:
        check_event_shape(self.received)
        assert [comparable(e) for e in self.received] == [comparable(e) for _, e in self.complete()]

    @invariant()
    def buffered_is_what_was_delivered_but_not_returned(self) -> None:
        last_end = max((end for end, _ in self.complete()), default=0)
        assert self.decoder.buffered == self.delivered - last_end

    def teardown(self) -> None:
        # Data handed out earlier (possibly views of the decoder's buffers) must not
        # have been overwritten by anything decoded since.
        self.returned_exactly_the_complete_messages()


class ClientDecoderMachine(DecoderMachine):
    """The same model for a client or worker: response magic, no text lines."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = Decoder(expect=RES, text=False)

    @rule(message=messages(RES, text=False, large=True))
    def queue(self, message: Message) -> None:
        self.stream += message.wire
        self.expected.append((len(self.stream), message.event))


MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDecoderMachine = DecoderMachine.TestCase
TestDecoderMachine.settings = MODEL_SETTINGS
TestClientDecoderMachine = ClientDecoderMachine.TestCase
TestClientDecoderMachine.settings = MODEL_SETTINGS
