"""Wire protocol between the dispatcher, zygotes and execution environments.

Every frame is a 4-byte big-endian body length followed by one msgpack map
whose ``t`` key names the message type. Lengths are checked against the
channel's maximum *before* a body is read, and bodies are decoded with
msgpack's own limits, so untrusted bytes can cost at most one frame of memory.
Anything malformed raises :class:`~sandbox.errors.ProtocolError`; the owner of
the channel closes it.

Zygote control channels are SOCK_SEQPACKET (one frame and its passed fds per
packet); environment channels are SOCK_STREAM (payloads up to 6 MiB).
"""

from __future__ import annotations

import os
import struct
import time
from collections import deque

import msgpack

from .constants import SYNC_PAYLOAD_MAX
from .errors import ProtocolError

# typing is not imported at run time: every cold start would pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, Protocol

    class Stream(Protocol):
        def recv_into(self, buffer: bytearray, /) -> int: ...
        def sendall(self, data: bytes, /) -> None: ...
        def settimeout(self, value: float | None, /) -> None: ...
        def close(self) -> None: ...

    class PollingStream(Stream, Protocol):
        def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0, /) -> int: ...

PROTOCOL_VERSION = 1

# Message types. Zygote control channel:
HELLO = "hello"  # zygote -> dispatcher: v, pid, init_ms, init_error, fork_safe
SPAWN = "spawn"  # dispatcher -> zygote, with fds [channel, log]: env, exec, environ
SPAWNED = "spawned"  # zygote -> dispatcher: env, pid
SPAWN_FAILED = "spawn_failed"  # zygote -> dispatcher: env, errno, stage, message
EXITED = "exited"  # zygote -> dispatcher: pid, env, status, maxrss_kb, utime, stime
# Environment channel:
READY = "ready"  # environment -> dispatcher: v, pid, init_ms, init_error
INVOKE = "invoke"  # dispatcher -> environment: id, event, deadline, context fields
RESULT = "result"  # environment -> dispatcher: id, payload, error_type, duration_ms,
#                    maxrss_kb, cpu_ms (this invocation), cpu_s (the process so far)
# Platform calls (sandbox/client/platform.py -> sandbox/invoke/platform.py), made by
# a running handler between INVOKE and RESULT:
PLATFORM_CALL = "platform_call"  # environment -> dispatcher: op, params
PLATFORM_REPLY = "platform_reply"  # dispatcher -> environment: result, or error {type, message}

HEADER = struct.Struct(">I")
# Room for the non-payload fields of a frame around a maximal payload.
FRAME_OVERHEAD = 64 * 1024
MAX_SYNC_FRAME = SYNC_PAYLOAD_MAX + FRAME_OVERHEAD
MAX_CONTROL_FRAME = 64 * 1024

_RECV_CHUNK = 64 * 1024
_MSG_DONTWAIT = 0x40  # socket.MSG_DONTWAIT on Linux, without importing socket
_NOTHING: Any = object()


def encode(frame: dict[str, Any]) -> bytes:
    """Serializes one frame: header plus msgpack body."""
    body = msgpack.packb(frame, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes | memoryview) -> dict[str, Any]:
    """Decodes one frame body; the caller has already bounded its size."""
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed frame body: {type(exc).__name__}: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
        raise ProtocolError("malformed frame: body is not a map with a string 't' key")
    return frame


def decode_packet(packet: bytes, max_frame: int = MAX_CONTROL_FRAME) -> dict[str, Any]:
    """Decodes a packet that must hold exactly one whole frame (SEQPACKET)."""
    if len(packet) < HEADER.size:
        raise ProtocolError(f"truncated frame: {len(packet)}-byte packet has no full header")
    (length,) = HEADER.unpack_from(packet)
    if length > max_frame:
        raise ProtocolError(f"oversized frame: {length} bytes, limit {max_frame}")
    if len(packet) != HEADER.size + length:
        raise ProtocolError(
            f"truncated frame: header says {length} bytes, packet holds {len(packet) - 4}"
        )
    return decode_body(packet[HEADER.size :])


class FrameDecoder:
    """Incremental decoder for a byte stream of frames."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_SYNC_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)

    def wanted(self) -> int:
        """How many more bytes complete the frame in progress (at least 1)."""
        buf = self._buf
        if len(buf) < HEADER.size:
            return HEADER.size - len(buf)
        return max(1, HEADER.size + HEADER.unpack_from(buf)[0] - len(buf))

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Adds bytes; returns every frame they complete, in order.

        Raises:
            ProtocolError: a header announces more than ``max_frame`` bytes, or
                a body is not a msgpack map with a string ``t``.
        """
        buf = self._buf
        if buf:
            buf += data
            data = buf
        # Frames wholly inside ``data`` are decoded in place, without copying
        # them into the buffer first: the common case of one small frame.
        view = memoryview(data)
        frames = []
        offset = 0
        end = len(view)
        while end - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(view, offset)
            if length > self.max_frame:
                raise ProtocolError(f"oversized frame: {length} bytes, limit {self.max_frame}")
            stop = offset + HEADER.size + length
            if stop > end:
                break
            frames.append(decode_body(view[offset + HEADER.size : stop]))
            offset = stop
        if not buf and offset < end:
            with view[offset:] as rest:
                buf += rest
        view.release()
        if buf is data:
            del buf[:offset]
        return frames


class FdStream:
    """The part of a stream socket's interface a Channel uses, on a bare fd.

    Environments use it for their channel so that a cold start need not import
    the socket module. It cannot time out: only the dispatcher side waits with
    deadlines.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def recv_into(self, buffer: bytearray, /) -> int:
        return os.readv(self.fd, [buffer])

    def sendall(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def settimeout(self, value: float | None, /) -> None:
        if value is not None:
            raise ValueError("an FdStream cannot time out")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Channel:
    """A blocking, framed channel over a connected stream (a socket or FdStream)."""

    __slots__ = ("sock", "_decoder", "_frames", "_rbuf")

    def __init__(self, sock: socket.socket | Stream, max_frame: int = MAX_SYNC_FRAME) -> None:
        self.sock = sock
        self._decoder = FrameDecoder(max_frame)
        self._frames: deque[dict[str, Any]] = deque()
        self._rbuf: bytearray | None = None

    def send(self, frame: dict[str, Any]) -> None:
        body = msgpack.packb(frame, use_bin_type=True)
        if len(body) < _RECV_CHUNK:
            self.sock.sendall(HEADER.pack(len(body)) + body)
        else:  # not worth copying megabytes to save one system call
            self.sock.sendall(HEADER.pack(len(body)))
            self.sock.sendall(body)

    def recv(self, deadline: float | None = None, spin_s: float = 0.0) -> dict[str, Any] | None:
        """Returns the next frame, or None when the peer closed cleanly.

        Args:
            deadline: a ``time.monotonic()`` value; None waits forever.
            spin_s: poll without sleeping for up to this long first (sockets
                only). An answer expected within microseconds then skips the
                scheduler's sleep and wake-up, which cost more than the wait.
        Raises:
            TimeoutError: the deadline passed first.
            ProtocolError: malformed frame, or the peer closed mid-frame.
        """
        frames = self._frames
        if frames:
            return frames.popleft()
        rbuf = self._rbuf
        if rbuf is None:
            rbuf = self._rbuf = bytearray(_RECV_CHUNK)
        decoder = self._decoder
        sock = self.sock
        if spin_s > 0.0:
            frame = self._spin(spin_s)
            if frame is not _NOTHING:
                return frame
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("deadline passed waiting for a frame")
                sock.settimeout(remaining)
            try:
                count = sock.recv_into(rbuf)
            except ConnectionResetError:
                count = 0
            finally:
                if deadline is not None:
                    sock.settimeout(None)
            if not count:
                if decoder.pending:
                    raise ProtocolError(
                        f"truncated frame: peer closed with {decoder.pending} bytes of a frame"
                    )
                return None
            with memoryview(rbuf) as view, view[:count] as chunk:
                received = decoder.feed(chunk)
            if received:
                if len(received) == 1:
                    return received[0]
                frames.extend(received[1:])
                return received[0]

    def _spin(self, spin_s: float) -> Any:
        """Non-blocking reads until a frame arrives or ``spin_s`` passes."""
        sock: PollingStream = self.sock  # type: ignore[assignment]
        rbuf = self._rbuf
        assert rbuf is not None
        give_up = time.perf_counter() + spin_s
        while True:
            try:
                count = sock.recv_into(rbuf, 0, _MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() > give_up:
                    return _NOTHING
                # Lets the peer run first should it share this CPU.
                os.sched_yield()
                continue
            except ConnectionResetError:
                count = 0
            if not count:
                if self._decoder.pending:
                    raise ProtocolError(f"truncated frame: peer closed with "
                                        f"{self._decoder.pending} bytes of a frame")
                return None
            with memoryview(rbuf) as view, view[:count] as chunk:
                received = self._decoder.feed(chunk)
            if received:
                self._frames.extend(received[1:])
                return received[0]

    def close(self) -> None:
        self.sock.close()


def check_version(frame: dict[str, Any], peer: str) -> None:
    """Raises ProtocolError unless a handshake frame speaks our version."""
    version = frame.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version mismatch: dispatcher speaks {PROTOCOL_VERSION}, {peer} speaks "
            f"{version!r}"
        )
