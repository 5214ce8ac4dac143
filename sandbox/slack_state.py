"""The Slack stand-in's workspace: users, user groups, channels, messages, ephemerals, views, response URLs.

Everything here is plain data guarded by one re-entrant lock (`Workspace.lock`), because tests may read it
from another thread while the server's event loop writes it. Timestamps (`ts`) look like Slack's
("1700000000.000100"): wall-clock microseconds, strictly increasing across the workspace.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

TEAM_ID = "T0SANDBOX"
TEAM_DOMAIN = "sandbox"
TEAM_NAME = "Sandbox"
APP_ID = "A0SANDBOX"
BOT_USER_ID = "U0IDMBOT"
BOT_ID = "B0IDMBOT"
BOT_NAME = "idm-upgrade"
VERIFICATION_TOKEN = "sandbox-verification-token"  # the legacy `token` field Slack still sends

OPS_CHANNEL = "C0OPSCHANL"
GENERAL_CHANNEL = "C0GENERAL1"
REQUESTER = "U0REQUESTER"
APPROVER = "U0APPROVER1"
APPROVER2 = "U0APPROVER2"
OUTSIDER = "U0OUTSIDER1"
GROUP = "S0APPROVERS"
GROUP_MEMBER = "U0GROUPMEMB"
# Second accounts of one person (users.info tells them apart from other people): the requester's admin
# account (same profile email), and an approver's Enterprise Grid account (same enterprise user id).
REQUESTER_ADMIN = "W0REQADMIN"
APPROVER_ALT = "W0APPROVER1"
APPROVER_ENTERPRISE_ID = "W0ENTALEX1"


@dataclass
class User:
    id: str
    name: str
    real_name: str
    is_bot: bool = False
    deleted: bool = False
    email: str | None = None  # profile.email (users:read.email); one person's accounts share it
    enterprise_id: str | None = None  # enterprise_user.id on Enterprise Grid: the person across accounts

    def to_api(self) -> dict[str, Any]:
        api = {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "profile": {
                "real_name": self.real_name,
                "real_name_normalized": self.real_name,
                "display_name": self.name,
                "display_name_normalized": self.name,
                "team": TEAM_ID,
                **({"email": self.email} if self.email else {}),
            },
        }
        if self.enterprise_id:
            api["enterprise_user"] = {"id": self.enterprise_id, "enterprise_id": "E0SANDBOX", "teams": [TEAM_ID]}
        return api


@dataclass
class Channel:
    id: str
    name: str
    members: set[str] = field(default_factory=set)
    is_private: bool = False
    bot_is_member: bool = True
    created: int = 1_600_000_000

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private,
            "is_group": False,
            "is_im": False,
            "is_private": self.is_private,
            "is_member": self.bot_is_member,
            "is_archived": False,
            "created": self.created,
            "context_team_id": TEAM_ID,
            "num_members": len(self.members),
        }


@dataclass
class Version:
    """One state of a message: as posted, then after each update."""

    text: str
    blocks: list[dict[str, Any]]
    at: float  # time.time()
    via: str  # "chat.postMessage", "chat.update", "response_url", ...


@dataclass
class Message:
    channel: str
    ts: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None  # set on replies (the parent's ts); None for top-level messages
    reply_broadcast: bool = False
    bot_id: str | None = None
    versions: list[Version] = field(default_factory=list)  # first as posted, last == current text/blocks
    deleted: bool = False
    edited_ts: str | None = None

    @property
    def edited(self) -> bool:
        return len(self.versions) > 1

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None


@dataclass
class Ephemeral:
    """A message only one user sees: chat.postEphemeral, a response_url answer, or a slash command's ack."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    source: str = "chat.postEphemeral"  # or "response_url", "ack"
    deleted: bool = False
    replaced: int = 0  # how many times replace_original changed it


@dataclass
class ResponsePost:
    at: float  # time.monotonic()
    body: Any
    status: int
    outcome: str  # "ephemeral", "in_channel", "replaced", "deleted", or the error


@dataclass
class ResponseUrl:
    id: str
    url: str
    kind: str  # "slash_commands", "block_actions", "view_submission"
    channel: str | None
    user: str
    message_ts: str | None = None  # the message a click came from (what replace/delete_original act on)
    message_is_ephemeral: bool = False
    created: float = field(default_factory=time.monotonic)
    posts: list[ResponsePost] = field(default_factory=list)

    @property
    def uses(self) -> int:
        return sum(1 for p in self.posts if p.status == 200)


@dataclass
class View:
    id: str
    type: str  # "modal" or "home"
    user: str
    view: dict[str, Any]
    root_view_id: str
    previous_view_id: str | None = None
    external_id: str | None = None
    hash: str = field(default_factory=lambda: f"{int(time.time())}.{secrets.token_hex(4)}")

    def to_api(self) -> dict[str, Any]:
        body = copy.deepcopy(self.view)
        body.update(
            id=self.id,
            team_id=TEAM_ID,
            app_id=APP_ID,
            bot_id=BOT_ID,
            root_view_id=self.root_view_id,
            previous_view_id=self.previous_view_id,
            external_id=self.external_id or "",
            hash=self.hash,
            state={"values": {}},
        )
        body.setdefault("blocks", [])
        return body


@dataclass(frozen=True)
class Button:
    action_id: str
    value: str | None
    block_id: str | None
    text: str
    style: str | None = None


def iter_elements(blocks: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(block, element) for every interactive element: actions elements and section accessories."""
    for block in blocks or []:
        if not isinstance(block, dict):
            continue
        for element in block.get("elements") or []:
            if isinstance(element, dict) and "action_id" in element:
                yield block, element
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and "action_id" in accessory:
            yield block, accessory


def find_button(blocks: Iterable[dict[str, Any]], action_id: str, value: str | None = None) -> Button | None:
    """The first button with `action_id` (and `value`, when given) in `blocks`, or None."""
    for block, element in iter_elements(blocks):
        if element.get("type") != "button" or element.get("action_id") != action_id:
            continue
        if value is not None and element.get("value") != value:
            continue
        text = element.get("text") or {}
        return Button(
            action_id=action_id,
            value=element.get("value"),
            block_id=block.get("block_id"),
            text=text.get("text", "") if isinstance(text, dict) else str(text),
            style=element.get("style"),
        )
    return None


def with_block_ids(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `blocks` where every block has a block_id, as Slack assigns one when the app gave none."""
    result = copy.deepcopy(blocks)
    for block in result:
        if isinstance(block, dict) and not block.get("block_id"):
            block["block_id"] = secrets.token_urlsafe(3)
    return result


def default_users() -> list[User]:
    return [
        User(BOT_USER_ID, BOT_NAME, "IDM Upgrade", is_bot=True),
        User(REQUESTER, "requester", "Rita Requester", email="rita@sandbox.example"),
        User(REQUESTER_ADMIN, "requester-admin", "Rita Requester (admin)", email="Rita@sandbox.example"),
        User(APPROVER, "approver", "Alex Approver", email="alex@sandbox.example", enterprise_id=APPROVER_ENTERPRISE_ID),
        User(
            APPROVER_ALT,
            "approver-alt",
            "Alex Approver",
            email="alex.alt@sandbox.example",
            enterprise_id=APPROVER_ENTERPRISE_ID,
        ),
        User(APPROVER2, "approver2", "Blake Approver", email="blake@sandbox.example"),
        User(GROUP_MEMBER, "groupmember", "Gale Groupmember", email="gale@sandbox.example"),
        User(OUTSIDER, "outsider", "Olive Outsider", email="olive@sandbox.example"),
    ]


class Workspace:
    """One Slack workspace's state. Take `lock` around anything that reads more than one attribute."""

    def __init__(
        self,
        users: Iterable[User] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        channels: Iterable[Channel] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, User] = {u.id: u for u in (default_users() if users is None else users)}
        if BOT_USER_ID not in self.users:
            self.users[BOT_USER_ID] = User(BOT_USER_ID, BOT_NAME, "IDM Upgrade", is_bot=True)
        self.usergroups: dict[str, list[str]] = (
            {GROUP: [APPROVER, APPROVER2, GROUP_MEMBER]} if usergroups is None else dict(usergroups)
        )
        everyone = set(self.users)
        self.channels: dict[str, Channel] = {
            c.id: c
            for c in (
                [Channel(OPS_CHANNEL, "idm-ops", set(everyone)), Channel(GENERAL_CHANNEL, "general", set(everyone))]
                if channels is None
                else channels
            )
        }
        self.messages: dict[str, list[Message]] = {}  # per channel, in ts order (replies included)
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, View] = {}
        self.home_views: dict[str, str] = {}  # user -> view id
        self.response_urls: dict[str, ResponseUrl] = {}
        self.triggers: dict[str, tuple[float, str]] = {}  # trigger_id -> (monotonic time, user)
        self._last_us = 0

    # ----- ids -----------------------------------------------------------------------------------

    def next_ts(self) -> str:
        with self.lock:
            self._last_us = max(self._last_us + 1, int(time.time() * 1_000_000))
            return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    def new_trigger_id(self, user: str) -> str:
        trigger_id = f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        with self.lock:
            self.triggers[trigger_id] = (time.monotonic(), user)
        return trigger_id

    # ----- directory -----------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, real_name: str | None = None, channels: Iterable[str] = ()) -> User:
        with self.lock:
            user = self.users[user_id] = User(user_id, name, real_name or name)
            for channel_id in channels:
                self.channels[channel_id].members.add(user_id)
            return user

    def add_channel(self, channel_id: str, name: str, members: Iterable[str] | None = None, **kw: Any) -> Channel:
        with self.lock:
            channel = self.channels[channel_id] = Channel(
                channel_id, name, set(self.users if members is None else members), **kw
            )
            return channel

    def add_usergroup(self, group_id: str, members: Iterable[str]) -> None:
        with self.lock:
            self.usergroups[group_id] = list(members)

    def channel(self, ref: str | None) -> Channel | None:
        """A channel by id, name or #name."""
        if not ref:
            return None
        with self.lock:
            if ref in self.channels:
                return self.channels[ref]
            name = ref.removeprefix("#")
            return next((c for c in self.channels.values() if c.name == name), None)

    def user_name(self, user_id: str) -> str:
        user = self.users.get(user_id)
        return user.name if user else user_id

    # ----- messages ------------------------------------------------------------------------------

    def post(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]],
        *,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
        via: str = "chat.postMessage",
    ) -> Message:
        with self.lock:
            blocks = with_block_ids(blocks)
            message = Message(
                channel=channel,
                ts=self.next_ts(),
                user=user,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                reply_broadcast=bool(thread_ts) and reply_broadcast,
                bot_id=BOT_ID if user == BOT_USER_ID else None,
                versions=[Version(text, copy.deepcopy(blocks), time.time(), via)],
            )
            self.messages.setdefault(channel, []).append(message)
            return message

    def edit(self, message: Message, text: str, blocks: list[dict[str, Any]], via: str = "chat.update") -> None:
        with self.lock:
            message.text = text
            message.blocks = with_block_ids(blocks)
            message.edited_ts = self.next_ts()
            message.versions.append(Version(text, copy.deepcopy(message.blocks), time.time(), via))

    def message(self, channel: str, ts: str | None) -> Message | None:
        with self.lock:
            return next((m for m in self.messages.get(channel, []) if m.ts == ts and not m.deleted), None)

    def all_messages(self, channel: str) -> list[Message]:
        with self.lock:
            return list(self.messages.get(channel, []))

    def top_level(self, channel: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages.get(channel, []) if not m.is_reply]

    def replies(self, channel: str, parent_ts: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages.get(channel, []) if m.thread_ts == parent_ts and not m.deleted]

    def to_api(self, message: Message) -> dict[str, Any]:
        """The message as Slack's API returns it (chat.postMessage's `message`, history, block_actions)."""
        with self.lock:
            body: dict[str, Any] = {
                "type": "message",
                "user": message.user,
                "text": message.text,
                "ts": message.ts,
                "team": TEAM_ID,
                "blocks": copy.deepcopy(message.blocks),
            }
            if message.bot_id:
                body.update(bot_id=message.bot_id, app_id=APP_ID)
            if message.thread_ts:
                body["thread_ts"] = message.thread_ts
                body["parent_user_id"] = (self.message(message.channel, message.thread_ts) or message).user
                if message.reply_broadcast:
                    body["subtype"] = "thread_broadcast"
            else:
                replies = self.replies(message.channel, message.ts)
                if replies:
                    body.update(
                        thread_ts=message.ts,
                        reply_count=len(replies),
                        reply_users=sorted({r.user for r in replies}),
                        latest_reply=replies[-1].ts,
                    )
            if message.edited_ts:
                body["edited"] = {"user": message.user, "ts": message.edited_ts}
            return body

    def ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]],
        *,
        thread_ts: str | None = None,
        source: str = "chat.postEphemeral",
    ) -> Ephemeral:
        with self.lock:
            item = Ephemeral(channel, user, self.next_ts(), text, with_block_ids(blocks), thread_ts, source)
            self.ephemerals.append(item)
            return item

    def ephemerals_for(self, channel: str | None = None, user: str | None = None) -> list[Ephemeral]:
        with self.lock:
            return [
                e
                for e in self.ephemerals
                if (channel is None or e.channel == channel) and (user is None or e.user == user) and not e.deleted
            ]
