"""sandbox/protocol.py: frames, the incremental decoder, channels, the handshake,
and what malformed frames do to live zygotes and environments."""

from __future__ import annotations

import socket
import struct
import threading
import time

import msgpack
import pytest
from conftest import function_zygote, invoke_from_zygote, wait_for, wait_gone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import protocol
from sandbox.errors import ProtocolError, SandboxError
from sandbox.protocol import (
    HEADER,
    MAX_CONTROL_FRAME,
    MAX_SYNC_FRAME,
    PROTOCOL_VERSION,
    Channel,
    FrameDecoder,
    check_version,
    decode_body,
    decode_packet,
    encode,
)

SAMPLE = {"t": "invoke", "id": "abc", "event": b"{\"k\": 1}", "deadline_ms": 1.5,
          "client_context": None, "nested": {"list": [1, -2, "x", None, True]}}


def frame_bytes(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


# -- encode / decode ----------------------------------------------------------------
def test_encode_layout_is_big_endian_length_then_msgpack_map():
    data = encode(SAMPLE)
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert msgpack.unpackb(data[4:], raw=False) == SAMPLE


def test_decode_packet_round_trip():
    assert decode_packet(encode(SAMPLE), MAX_SYNC_FRAME) == SAMPLE


def test_bytes_and_str_stay_distinct():
    frame = decode_packet(encode({"t": "x", "b": b"\x00\xff", "s": "\u00e9"}))
    assert frame["b"] == b"\x00\xff" and isinstance(frame["b"], bytes)
    assert frame["s"] == "\u00e9" and isinstance(frame["s"], str)


def test_decoder_yields_every_frame_of_one_chunk_in_order():
    frames = [{"t": "a", "n": i} for i in range(5)]
    decoder = FrameDecoder()
    assert decoder.feed(b"".join(encode(f) for f in frames)) == frames
    assert decoder.pending == 0


def test_frames_split_at_every_byte_boundary():
    stream = encode(SAMPLE) + encode({"t": "second", "n": 2})
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == [SAMPLE, {"t": "second", "n": 2}], cut
        assert decoder.pending == 0


def test_frames_fed_one_byte_at_a_time():
    stream = encode(SAMPLE) * 3
    decoder = FrameDecoder()
    got = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == [SAMPLE] * 3


def test_wanted_counts_the_bytes_that_complete_a_frame():
    data = encode(SAMPLE)
    decoder = FrameDecoder()
    assert decoder.wanted() == 4
    decoder.feed(data[:2])
    assert decoder.wanted() == 2
    decoder.feed(data[2:10])
    assert decoder.wanted() == len(data) - 10
    assert decoder.feed(data[10:]) == [SAMPLE]


def test_oversized_header_rejected_before_the_body_arrives():
    decoder = FrameDecoder(max_frame=1000)
    with pytest.raises(ProtocolError, match="oversized"):
        decoder.feed(HEADER.pack(1001))


def test_oversized_header_rejected_with_default_sync_limit():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="oversized"):
        decoder.feed(HEADER.pack(MAX_SYNC_FRAME + 1))


def test_frame_of_exactly_max_size_is_accepted():
    pad = 100 - len(msgpack.packb({"t": "x", "pad": b""}, use_bin_type=True))
    body = msgpack.packb({"t": "x", "pad": b"p" * pad}, use_bin_type=True)
    assert len(body) == 100
    assert FrameDecoder(max_frame=100).feed(frame_bytes(body)) == [{"t": "x", "pad": b"p" * pad}]
    with pytest.raises(ProtocolError):
        FrameDecoder(max_frame=99).feed(frame_bytes(body))


@pytest.mark.parametrize("body", [
    msgpack.packb([1, 2, 3]),
    msgpack.packb("t"),
    msgpack.packb(7),
    msgpack.packb(None),
    msgpack.packb({"type": "x"}),
    msgpack.packb({"t": 1}),
    msgpack.packb({"t": None}),
    msgpack.packb({"t": b"bytes-not-str"}, use_bin_type=True),
    msgpack.packb({1: "int key", "t": "x"}),
    b"\xc1",  # never used in msgpack
    b"",  # empty body
    msgpack.packb({"t": "x"}) + b"\x00",  # trailing data
    msgpack.packb({"t": "x"})[:-1],  # truncated body
    b"\x81\xa1t\xc4",  # truncated bin value
], ids=["array", "str", "int", "nil", "no-t", "int-t", "nil-t", "bytes-t", "int-key", "c1",
        "empty", "extra", "truncated", "truncated-bin"])
def test_malformed_bodies_raise_protocol_error(body):
    with pytest.raises(ProtocolError, match="malformed"):
        decode_body(body)
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(frame_bytes(body))
    with pytest.raises(ProtocolError):
        decode_packet(frame_bytes(body))


def test_protocol_error_is_a_sandbox_error():
    with pytest.raises(SandboxError):
        decode_body(b"\xc1")


def test_decode_packet_rejects_short_long_and_oversized_packets():
    data = encode({"t": "x"})
    with pytest.raises(ProtocolError, match="truncated"):
        decode_packet(data[:3])
    with pytest.raises(ProtocolError, match="truncated"):
        decode_packet(data[:-1])
    with pytest.raises(ProtocolError, match="truncated"):
        decode_packet(data + b"\x00")
    with pytest.raises(ProtocolError, match="oversized"):
        decode_packet(HEADER.pack(MAX_CONTROL_FRAME + 1) + b"\x00" * 8)


def test_check_version():
    check_version({"t": "hello", "v": PROTOCOL_VERSION}, "zygote")
    with pytest.raises(ProtocolError, match="version mismatch"):
        check_version({"t": "hello", "v": PROTOCOL_VERSION + 1}, "zygote")
    with pytest.raises(ProtocolError, match="version"):
        check_version({"t": "hello"}, "environment")
    with pytest.raises(ProtocolError, match="version"):
        check_version({"t": "hello", "v": str(PROTOCOL_VERSION)}, "environment")


# -- hypothesis ---------------------------------------------------------------------
def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(0, 4096), max_size=12),
       max_frame=st.integers(0, 512))
def test_fuzz_decoder_raises_only_protocol_error_and_stays_bounded(data, cuts, max_frame):
    decoder = FrameDecoder(max_frame=max_frame)
    for piece in _chunks(data, cuts):
        try:
            frames = decoder.feed(piece)
        except ProtocolError:
            return  # the channel's owner closes it here
        assert decoder.pending <= max_frame + HEADER.size
        for frame in frames:
            assert isinstance(frame, dict) and isinstance(frame["t"], str)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_fuzz_well_framed_garbage_bodies(body, cuts):
    """Correct lengths, arbitrary bodies: a map with a string 't' or ProtocolError."""
    decoder = FrameDecoder(max_frame=300)
    try:
        frames = [f for piece in _chunks(frame_bytes(body), cuts) for f in decoder.feed(piece)]
    except ProtocolError:
        return
    assert len(frames) == 1
    assert isinstance(frames[0], dict) and isinstance(frames[0]["t"], str)
    assert decoder.pending == 0


_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_frames = st.builds(lambda t, rest: {**rest, "t": t}, st.text(max_size=10),
                    st.dictionaries(st.text(max_size=8), _values, max_size=5))


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(_frames, min_size=1, max_size=5),
       cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_fuzz_valid_frames_survive_any_chunking(frames, cuts):
    stream = b"".join(encode(f) for f in frames)
    decoder = FrameDecoder()
    got = [f for piece in _chunks(stream, cuts) for f in decoder.feed(piece)]
    assert got == frames
    assert decoder.pending == 0


# -- Channel over real sockets ----------------------------------------------------------
@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_channel_round_trip(pair):
    left, right = Channel(pair[0]), Channel(pair[1])
    left.send(SAMPLE)
    left.send({"t": "second"})
    assert right.recv(time.monotonic() + 5) == SAMPLE
    assert right.recv(time.monotonic() + 5) == {"t": "second"}
    big = {"t": "reply", "payload": b"x" * 1_000_000}
    sender = threading.Thread(target=right.send, args=(big,))
    sender.start()  # a socket buffer holds less than the frame
    assert left.recv(time.monotonic() + 5) == big
    sender.join()


def test_channel_large_frame_trickled_in_small_writes(pair):
    data = encode({"t": "big", "p": b"y" * 300_000})

    def writer():
        for i in range(0, len(data), 7919):
            pair[0].sendall(data[i : i + 7919])

    thread = threading.Thread(target=writer)
    thread.start()
    assert Channel(pair[1]).recv(time.monotonic() + 10) == {"t": "big", "p": b"y" * 300_000}
    thread.join()


def test_channel_clean_close_returns_none(pair):
    pair[0].close()
    assert Channel(pair[1]).recv(time.monotonic() + 5) is None


def test_channel_truncated_frame_at_eof_is_protocol_error(pair):
    data = encode(SAMPLE)
    pair[0].sendall(data[:-3])
    pair[0].close()
    with pytest.raises(ProtocolError, match="truncated"):
        Channel(pair[1]).recv(time.monotonic() + 5)


def test_channel_truncated_header_at_eof_is_protocol_error(pair):
    pair[0].sendall(b"\x00\x00")
    pair[0].close()
    with pytest.raises(ProtocolError, match="truncated"):
        Channel(pair[1]).recv(time.monotonic() + 5)


def test_channel_oversized_header_refused_before_body(pair):
    pair[0].sendall(HEADER.pack(2000))  # no body will ever follow
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="oversized"):
        Channel(pair[1], max_frame=1000).recv(time.monotonic() + 5)
    assert time.monotonic() - started < 2  # did not wait for the body


def test_channel_malformed_body_is_protocol_error(pair):
    pair[0].sendall(frame_bytes(msgpack.packb([1, 2])))
    with pytest.raises(ProtocolError):
        Channel(pair[1]).recv(time.monotonic() + 5)


def test_channel_deadline(pair):
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        Channel(pair[1]).recv(started + 0.2)
    assert 0.15 <= time.monotonic() - started < 2
    assert pair[1].gettimeout() is None  # the socket is blocking again


def test_channel_passed_deadline_raises_at_once(pair):
    with pytest.raises(TimeoutError):
        Channel(pair[1]).recv(time.monotonic() - 1)


# -- malformed frames against live processes ----------------------------------------------
COUNTER = """
import os
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    if event.get("garbage"):
        os.write(3, event["garbage"].encode("latin-1"))
        import time
        time.sleep(5)
    return {"count": COUNT, "pid": os.getpid()}
"""


def _zygote(runtime, name):
    return function_zygote(runtime, name)


def _assert_works(runtime, name):
    r = runtime.invoke(name, {})
    assert r.function_error is None, r.payload
    assert r.payload["count"] >= 1
    return r


def test_malformed_control_frame_does_not_break_the_function(runtime, make_function):
    """Garbage on a zygote's control socket: the zygote drops the channel, the
    dispatcher survives and the next invoke works (from a new zygote)."""
    make_function("f", COUNTER, start="snapshot")
    _assert_works(runtime, "f")
    assert runtime.shutdown_idle("f") == 1
    zygote = _zygote(runtime, "f")
    zygote_pid = zygote.pid
    zygote.ctrl.send(b"\x00\x00\x00\x05garbage-that-is-not-msgpack")
    assert not wait_gone([zygote_pid])
    assert wait_for(lambda: not zygote.alive, 5)
    r = _assert_works(runtime, "f")
    assert r.report["start"] == "snapshot"
    assert _zygote(runtime, "f").pid != zygote_pid


@pytest.mark.parametrize("packet", [b"", b"\x00\x00", HEADER.pack(10**9) + b"xx",
                                    encode({"t": "bogus-type"}), encode({"no": "type"})],
                         ids=["empty", "short", "oversized", "wrong-type", "no-type"])
def test_zygote_rejects_each_malformed_control_packet(runtime, make_function, packet):
    make_function("f", COUNTER, start="snapshot")
    _assert_works(runtime, "f")
    runtime.shutdown_idle("f")
    zygote = _zygote(runtime, "f")
    zygote.ctrl.send(packet)
    assert not wait_gone([zygote.pid])
    assert wait_for(lambda: not zygote.alive, 5)
    _assert_works(runtime, "f")


def test_malformed_control_frame_with_a_warm_environment(runtime, make_function):
    make_function("f", COUNTER, start="snapshot")
    assert invoke_from_zygote(runtime, "f").function_error is None
    pool = runtime._functions["f"].pool
    assert pool.idle_count == 1
    zygote = _zygote(runtime, "f")
    zygote.ctrl.send(b"garbage")
    assert not wait_gone([zygote.pid])
    assert wait_for(lambda: all(env.exited for env in pool._idle), 5)
    _assert_works(runtime, "f")


def test_malformed_frame_to_environment_channel(runtime, make_function, start):
    """Garbage from the dispatcher's side of an environment's channel: that
    environment closes its channel; the next invoke of the function works."""
    make_function("f", COUNTER, start=start)
    first = _assert_works(runtime, "f")
    pool = runtime._functions["f"].pool
    env = pool._idle[-1]
    env.channel.sock.sendall(HEADER.pack(MAX_SYNC_FRAME + 1))
    assert not wait_gone([first.report["pid"]])
    assert wait_for(lambda: env.exited, 5)
    _assert_works(runtime, "f")


@pytest.mark.parametrize("garbage", ["\xff\xff\xff\xff", "\x00\x00\x00\x02\x92\x01",
                                     "\x00\x00\x00\x01"],
                         ids=["oversized", "not-a-map", "truncated"])
def test_malformed_frame_from_environment(runtime, make_function, start, garbage):
    """A handler that writes garbage on its channel gets its environment
    discarded with a function error; the dispatcher and the next invoke are fine."""
    make_function("f", COUNTER, start=start, timeout_s=1)
    _assert_works(runtime, "f")
    started = time.monotonic()
    r = runtime.invoke("f", {"garbage": garbage})
    if garbage == "\x00\x00\x00\x01":
        # A truncated frame is only noticed at the deadline: the environment
        # goes on sleeping with half a frame sent.
        assert r.payload["errorType"] == "Sandbox.Timedout"
    else:
        assert r.payload["errorType"] == "Runtime.ExitError"
        assert time.monotonic() - started < 0.9  # noticed at once, not at the deadline
    assert r.function_error == "Unhandled"
    r = _assert_works(runtime, "f")
    assert r.payload["count"] == 1
    assert r.report["start"] == start


def test_protocol_module_constants():
    assert protocol.MAX_SYNC_FRAME > 6 * 1024 * 1024
    assert protocol.HEADER.size == 4
