"""The per-connection Outbound and the frame encoder, without a server."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from server.transport.frames import engineio_frame, frame
from server.transport.outbound import Flusher, MaxLag, Outbound


class FakeTransport:
    def __init__(self, kernel: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.kernel = kernel  # what the kernel's send buffer may hold once capped
        self.asked = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def bound_send_buffer(self, size: int) -> int:
        self.asked = size
        return self.kernel


def make(
    limit: int = 10_000, *, max_lag: MaxLag = 0, kernel: int = 0
) -> tuple[Outbound, FakeTransport, list[Outbound]]:
    transport = FakeTransport(kernel)
    overflowed: list[Outbound] = []
    outbound = Outbound(
        transport, Flusher(), limit_bytes=limit, on_overflow=overflowed.append, max_lag=max_lag
    )
    return outbound, transport, overflowed


def parse(data: bytes) -> list[Frame]:
    """websockets' own frame parser (a client reads unmasked server frames)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 200_000])
def test_frames_parse_as_websockets_reads_them(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    (text,) = parse(frame(payload))
    assert text.opcode is Opcode.TEXT and text.fin and text.data == payload
    (binary,) = parse(engineio_frame(payload))
    assert binary.opcode is Opcode.BINARY and binary.data == payload
    (eio,) = parse(engineio_frame("4hello é"))
    assert eio.opcode is Opcode.TEXT and eio.data == "4hello é".encode()


async def test_frames_of_one_iteration_leave_in_one_write_in_order() -> None:
    outbound, transport, _ = make()
    for i in range(5):
        outbound.write(b"%d" % i, "room:a")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"01234"]
    outbound.write(b"5")
    await asyncio.sleep(0)
    assert transport.writes == [b"01234", b"5"]


async def test_while_paused_latest_values_replace_the_previous_of_their_channel() -> None:
    outbound, transport, _ = make()
    outbound.pause()
    outbound.write(b"p1,", "job:1", "job.progress")
    outbound.write(b"p2,", "job:1", "job.progress")
    outbound.write(b"q1,", "job:2", "job.progress")  # another channel: kept
    outbound.write(b"ack,")  # not a publication: kept, and does not stop coalescing
    outbound.write(b"p3,", "job:1", "job.progress")
    outbound.write(b"done,", "job:1")  # a terminal event is never replaced...
    outbound.write(b"p4,", "job:1", "job.progress")  # ...nor skipped over
    await asyncio.sleep(0)
    assert transport.writes == []  # nothing is written while paused
    outbound.resume()
    await asyncio.sleep(0)
    assert transport.writes == [b"q1,ack,p3,done,p4,"]
    assert outbound.coalesced == 2


async def test_unpaused_frames_are_never_coalesced() -> None:
    outbound, transport, _ = make()
    outbound.write(b"p1,", "job:1", "job.progress")
    outbound.write(b"p2,", "job:1", "job.progress")
    await asyncio.sleep(0)
    assert transport.writes == [b"p1,p2,"]


async def test_a_backlog_over_the_bound_overflows_once_and_lets_only_control_frames_out() -> None:
    outbound, transport, overflowed = make(limit=100)
    outbound.pause()
    transport.buffered = 60
    outbound.write(b"x" * 30, "room:a")
    assert not overflowed
    outbound.write(b"y" * 30, "room:a")
    assert overflowed == [outbound] and outbound.backlog_bytes == 0
    outbound.write(b"z" * 30, "room:a")  # dropped: the client resumes from its position
    outbound.write(b"notice")  # the slow notice and the close go out at once
    assert transport.writes == [b"notice"]
    assert overflowed == [outbound]


async def test_close_hands_the_queue_to_the_transport_before_the_close_frame() -> None:
    outbound, transport, _ = make()
    outbound.write(b"a")
    outbound.write(b"b")
    outbound.close()
    assert transport.writes == [b"ab"]
    outbound.write(b"c")
    await asyncio.sleep(0)
    assert transport.writes == [b"ab"]


def test_the_kernels_send_buffer_is_capped_and_counted_while_paused() -> None:
    """Issue 16: only the transport's buffer counted; the kernel held 2.94 MB for a client
    that had stopped reading, out of sight."""
    outbound, transport, overflowed = make(1_000_000, kernel=500_000)
    assert transport.asked == 250_000
    outbound.pause()
    transport.buffered = 400_000
    outbound.write(b"x" * 50_000, "room:a")
    assert not overflowed
    outbound.write(b"x" * 60_000, "room:a")  # 110,000 + 400,000 + 500,000 > 1,000,000
    assert overflowed == [outbound]


def test_a_client_is_cut_off_before_it_lags_past_what_history_can_replay() -> None:
    outbound, transport, overflowed = make(10_000_000, max_lag=270)
    outbound.pause()
    for _ in range(270):
        outbound.write(b"a" * 100, "room:a")
        outbound.write(b"b" * 100, "room:b")
        outbound.write(b"t" * 100, "room:c", key="demo.tick")  # coalesced: never lags
    assert not overflowed
    outbound.write(b"a" * 100, "room:a")  # 271 waiting on room:a: no longer resumable
    assert overflowed == [outbound]


def test_each_channel_may_lag_as_far_as_its_own_history_reaches() -> None:
    """A namespace's history size bounds its channels' lag (chat: 10, the rest: 270)."""
    outbound, transport, overflowed = make(
        10_000_000, max_lag=lambda channel: 9 if channel.startswith("chat:") else 270
    )
    outbound.pause()
    for _ in range(9):
        outbound.write(b"c" * 100, "chat:a")
        outbound.write(b"r" * 100, "room:a")
    for _ in range(100):
        outbound.write(b"r" * 100, "room:a")
    assert not overflowed
    outbound.write(b"c" * 100, "chat:a")  # the 10th waiting on chat:a
    assert overflowed == [outbound]


async def test_a_large_frame_in_flight_does_not_make_its_client_slow() -> None:
    outbound, transport, overflowed = make(1_000_000)
    outbound.write(b"d" * 900_000)  # a big document's sync, say
    await asyncio.sleep(0)  # flushed to the transport, which pauses
    transport.buffered = 900_000
    outbound.pause()
    outbound.write(b"x" * 1_000, "room:a")
    assert not overflowed
    outbound.resume()
    outbound.pause()  # the big frame has left; what follows counts in full again
    transport.buffered = 999_500
    outbound.write(b"x" * 1_000, "room:a")
    assert overflowed == [outbound]
