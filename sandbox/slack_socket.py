"""The Socket Mode side of the Slack stand-in: the WebSocket that `apps.connections.open` hands out.

What slack_sdk's aiohttp SocketModeClient (under Bolt's AsyncSocketModeHandler) does with it, and what this
serves in return:

- the client calls `apps.connections.open` with the app-level token and connects to the returned
  ``ws://127.0.0.1:PORT/socket-mode?ticket=...``; an unknown ticket is refused with 401;
- on connect the server sends ``{"type": "hello", ...}``;
- the client pings with ``sdk-ping-pong:<time>`` and expects the same data back in a pong (aiohttp's
  autoping answers); it also sends aiohttp heartbeats, answered the same way;
- an envelope ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` is acked by a text frame
  ``{"envelope_id": ..., "payload"?: {...}}``;
- ``{"type": "disconnect", "reason": "refresh_requested"}`` makes the client open a new connection (via
  `apps.connections.open` again) and close the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from sandbox.slack_state import APP_ID


@dataclass
class SocketAck:
    envelope_id: str
    payload: dict[str, Any] | None  # the ack's "payload" (Bolt's ack(...) body), None for a bare ack
    seconds: float  # from sending the envelope to reading the ack
    message: dict[str, Any]  # the ack frame as the client sent it


class SocketModeHub:
    def __init__(self) -> None:
        self.tickets: dict[str, float] = {}
        self.connections: list[web.WebSocketResponse] = []  # open now, oldest first
        self.connections_opened = 0
        self.envelopes: list[dict[str, Any]] = []  # every envelope delivered
        self.acks: list[SocketAck] = []
        self.received: list[Any] = []  # every text frame the clients sent (decoded JSON, or the raw text)
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], web.WebSocketResponse]] = {}

    def issue_ticket(self) -> str:
        ticket = secrets.token_urlsafe(16)
        self.tickets[ticket] = time.monotonic()
        return ticket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self.tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        self.connections.append(ws)
        self.connections_opened += 1
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self.connections),
                    "debug_info": {"host": "sandbox-applink", "build_number": 1, "approximate_connection_time": 3600},
                    "connection_info": {"app_id": APP_ID},
                }
            )
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_text(frame.data)
        finally:
            self._forget(ws)
        return ws

    def _forget(self, ws: web.WebSocketResponse) -> None:
        """The connection is gone: no more deliveries to it, and its unacked envelopes fail."""
        if ws in self.connections:
            self.connections.remove(ws)
        for envelope_id, (future, owner) in list(self._pending.items()):
            if owner is ws:
                self._pending.pop(envelope_id, None)
                if not future.done():
                    future.set_exception(ConnectionResetError("the socket closed before the ack"))

    def cut_all(self) -> None:
        """Forget every connection now (the server is about to drop them)."""
        for ws in list(self.connections):
            self._forget(ws)

    def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            self.received.append(data)
            return
        self.received.append(message)
        if isinstance(message, dict):
            pending = self._pending.pop(str(message.get("envelope_id")), None)
            if pending is not None and not pending[0].done():
                pending[0].set_result(message)

    async def wait_connected(self, timeout: float = 5.0) -> web.WebSocketResponse:
        """The newest open connection; waits up to `timeout` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            open_now = [ws for ws in self.connections if not ws.closed]
            if open_now:
                return open_now[-1]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Socket Mode client connected within {timeout} s")
            await asyncio.sleep(0.01)

    async def deliver(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        timeout: float = 3.0,
        accepts_response_payload: bool = True,
        retry_attempt: int | None = None,
    ) -> SocketAck:
        """Send an envelope to the newest connection and wait up to `timeout` s for its ack. With
        `retry_attempt`, it is Slack's resend of an envelope it thinks failed (with `retry_reason`)."""
        ws = await self.wait_connected(timeout)
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry_attempt is not None:
            envelope |= {"retry_attempt": retry_attempt, "retry_reason": "timeout"}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[envelope_id] = (future, ws)
        self.envelopes.append(envelope)
        started = time.monotonic()
        await ws.send_str(json.dumps(envelope))
        try:
            message = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(envelope_id, None)
            raise TimeoutError(f"no ack for envelope {envelope_id} ({kind}) within {timeout} s") from None
        payload_back = message.get("payload")
        returned = payload_back if isinstance(payload_back, dict) else None
        ack = SocketAck(envelope_id, returned, time.monotonic() - started, message)
        self.acks.append(ack)
        return ack

    async def disconnect(self, reason: str = "refresh_requested") -> int:
        """Ask every connected client to reconnect, as Slack does before recycling a connection."""
        sent = 0
        for ws in list(self.connections):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "sandbox"}})
                sent += 1
        return sent

    async def close_all(self) -> None:
        for ws in list(self.connections):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
