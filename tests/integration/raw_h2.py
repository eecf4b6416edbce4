"""A gRPC client written on raw HTTP/2 (hyper-h2), for calls no well-behaved client makes.

It opens streams without waiting for the server's SETTINGS, never grants the
server flow-control window when asked not to (so answers cannot be sent),
and sends message bytes without finishing the message.
"""

import socket
import struct

import h2.config
import h2.connection
import h2.exceptions
import h2.settings

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


def framed(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\0" + struct.pack(">I", len(message)) + message


class RawGrpcConnection:
    """One HTTP/2 connection to a gRPC port; ``window`` is what the server may send us."""

    def __init__(self, target: str, window: int = 65_535):
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.sock.sendall(self.h2.data_to_send())

    def headers(self, token: str | None = None) -> list[tuple[str, str]]:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", INFER_PATH),
            (":authority", "model-server"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        return headers + ([("authorization", f"Bearer {token}")] if token else [])

    def call(self, message: bytes, token: str | None = None) -> bool:
        """Open a stream and send a whole message; False once the server refuses streams."""
        try:
            stream = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream, self.headers(token))
            self.h2.send_data(stream, framed(message), end_stream=True)
        except h2.exceptions.H2Error:
            return False
        self.sock.sendall(self.h2.data_to_send())
        return True

    def unfinished(self, size: int, token: str | None = None) -> int:
        """Open a stream and send ``size`` bytes of a message declared one byte longer:
        as many as the server's window takes. Returns the bytes sent."""
        try:
            stream = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream, self.headers(token))
        except h2.exceptions.H2Error:
            return 0
        data = struct.pack(">BI", 0, size + 1) + b"\x0a" * size
        sent = 0
        while sent < len(data):
            self.receive(timeout=0.05)
            try:
                room = min(
                    self.h2.local_flow_control_window(stream),
                    self.h2.max_outbound_frame_size,
                    len(data) - sent,
                )
                if room <= 0:
                    break
                self.h2.send_data(stream, data[sent : sent + room])
            except h2.exceptions.H2Error:  # The server closed the stream: refused.
                break
            sent += room
            self.sock.sendall(self.h2.data_to_send())
        return sent

    def receive(self, timeout: float) -> list:
        """Events that arrive within ``timeout`` seconds (window updates, answers, resets)."""
        self.sock.settimeout(timeout)
        events = []
        try:
            while data := self.sock.recv(65_536):
                events += self.h2.receive_data(data)
        except (TimeoutError, BlockingIOError):
            pass
        except (OSError, h2.exceptions.ProtocolError):  # The server closed the connection.
            return events
        if pending := self.h2.data_to_send():
            self.sock.sendall(pending)
        return events

    def close(self) -> None:
        self.sock.close()
