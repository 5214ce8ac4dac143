"""WS-Management SOAP as a Windows WinRM service speaks it: request parsing and response building.

Only the Windows Remote Shell (WinRS) subset that pywinrm uses: Create, Command, Send, Receive, Signal
and Delete on the `windows/shell/cmd` resource. Responses copy the shapes Windows sends (the canned
envelopes in pywinrm's own test suite are captures of real hosts), because clients parse them loosely
and a shape that only *our* client accepts would hide bugs that show up against real servers.
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}

SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
COMMAND_STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
COMMAND_STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"

_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"

# Action URI -> short name. The response action is the request action with "Response" appended.
ACTIONS = {
    _TRANSFER + "Create": "Create",
    _TRANSFER + "Delete": "Delete",
    _SHELL + "Command": "Command",
    _SHELL + "Send": "Send",
    _SHELL + "Receive": "Receive",
    _SHELL + "Signal": "Signal",
}

# Windows' default MaxTimeoutms is 60 s; a request without w:OperationTimeout gets that.
DEFAULT_OPERATION_TIMEOUT = 60.0


class MalformedRequest(ValueError):
    """The body is not a WS-Management envelope we can act on."""


@dataclass(frozen=True)
class Fault:
    """A SOAP fault as Windows reports it: SOAP code/subcode, reason text, and the WSManFault code.

    `wsman_code` is the HRESULT-style number pywinrm exposes as `WSManFaultError.wsman_fault_code`;
    None leaves the WSManFault element without a Code attribute.
    """

    code: str
    subcode: str
    reason: str
    wsman_code: int | None = None
    http_status: int = 500


# Captured from Windows (pywinrm's tests carry the same envelope): what a Receive gets when the command
# produced nothing within OperationTimeout. pywinrm turns exactly this code into a silent re-poll.
TIMED_OUT = Fault(
    code="s:Receiver",
    subcode="w:TimedOut",
    reason="The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  ",
    wsman_code=2150858793,
)


def shell_not_found(shell_id: str) -> Fault:
    # 0x8033805B, what a host answers for a ShellId it does not know (after a reboot, or a Delete).
    return Fault(
        code="s:Sender",
        subcode="w:InvalidSelectors",
        reason=f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell "
        "was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell "
        "no longer exists on the server. Provide the correct ShellId or create a new shell and retry the "
        "operation.",
        wsman_code=2150858843,
    )


def invalid_parameter(reason: str) -> Fault:
    # No WSManFault code: the exact number Windows uses for these cases is not documented publicly.
    return Fault(code="s:Sender", subcode="w:InvalidParameter", reason=reason)


def action_not_supported(action: str) -> Fault:
    return Fault(
        code="s:Sender",
        subcode="a:ActionNotSupported",
        reason=f"The action {action} is not supported by the service.",
    )


def internal_error() -> Fault:
    """The generic 500 used by fault injection: E_OUTOFMEMORY, as a host under memory pressure answers."""
    return Fault(
        code="s:Receiver",
        subcode="w:InternalError",
        reason="Not enough memory resources are available to process this command. ",
        wsman_code=0x8007000E,
    )


@dataclass(frozen=True)
class WSManRequest:
    action: str  # short name from ACTIONS, or the raw URI when unknown
    action_uri: str
    message_id: str
    resource_uri: str | None
    operation_timeout: float
    shell_id: str | None
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None  # the first child of s:Body, if any


def parse_request(data: bytes) -> WSManRequest:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise MalformedRequest(f"not XML: {exc}") from exc
    header = root.find("s:Header", NS)
    if root.tag != f"{{{NS['s']}}}Envelope" or header is None:
        raise MalformedRequest("not a SOAP 1.2 envelope")
    action_uri = _text(header.find("a:Action", NS))
    message_id = _text(header.find("a:MessageID", NS))
    if not action_uri or not message_id:
        raise MalformedRequest("a:Action and a:MessageID are required")
    shell_id = None
    for selector in header.findall("w:SelectorSet/w:Selector", NS):
        if selector.get("Name") == "ShellId":
            shell_id = _text(selector)
    options = {opt.get("Name", ""): _text(opt) or "" for opt in header.findall("w:OptionSet/w:Option", NS)}
    body = root.find("s:Body", NS)
    return WSManRequest(
        action=ACTIONS.get(action_uri, action_uri),
        action_uri=action_uri,
        message_id=message_id,
        resource_uri=_text(header.find("w:ResourceURI", NS)),
        operation_timeout=parse_duration(_text(header.find("w:OperationTimeout", NS))),
        shell_id=shell_id,
        options=options,
        body=body[0] if body is not None and len(body) else None,
    )


_DURATION = re.compile(r"^P(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str | None) -> float:
    """xs:duration (only the time part, which is all WS-Management uses here) -> seconds."""
    if not text:
        return DEFAULT_OPERATION_TIMEOUT
    match = _DURATION.match(text.strip())
    if not match:
        raise MalformedRequest(f"bad xs:duration {text!r}")
    hours, minutes, seconds = (float(match.group(g) or 0) for g in ("h", "m", "s"))
    return hours * 3600 + minutes * 60 + seconds


def command_line(req: WSManRequest) -> str:
    """rsp:CommandLine as cmd.exe receives it: the command and its arguments joined by spaces."""
    if req.body is None or req.body.tag != f"{{{NS['rsp']}}}CommandLine":
        raise MalformedRequest("Command needs rsp:CommandLine")
    command = _text(req.body.find("rsp:Command", NS)) or ""
    arguments = [_text(arg) or "" for arg in req.body.findall("rsp:Arguments", NS)]
    return " ".join([command, *arguments]) if arguments else command


def body_command_id(req: WSManRequest) -> str:
    """CommandId of a Receive (on rsp:DesiredStream), Signal or Send (on the body element)."""
    if req.body is None:
        raise MalformedRequest(f"{req.action} needs a body")
    command_id = req.body.get("CommandId")
    if command_id is None:
        # Not `find(...) or find(...)`: an Element without children is falsy.
        for tag in ("rsp:DesiredStream", "rsp:Stream"):
            stream = req.body.find(tag, NS)
            if stream is not None:
                command_id = stream.get("CommandId")
                break
    if not command_id:
        raise MalformedRequest(f"{req.action} needs a CommandId")
    return command_id


@dataclass(frozen=True)
class StdinChunk:
    """One rsp:Send: a piece of a command's stdin, and whether it is the last (End="true")."""

    command_id: str
    data: bytes
    end: bool


def send_stream(req: WSManRequest) -> StdinChunk:
    """rsp:Send/rsp:Stream Name="stdin" CommandId=... End="true|false", base64 content."""
    stream = req.body.find("rsp:Stream", NS) if req.body is not None else None
    if req.body is None or req.body.tag != f"{{{NS['rsp']}}}Send" or stream is None:
        raise MalformedRequest("Send needs rsp:Send/rsp:Stream")
    if stream.get("Name") != "stdin":
        raise MalformedRequest(f"Send to the stream {stream.get('Name')!r}; the shell's input stream is stdin")
    command_id = stream.get("CommandId") or req.body.get("CommandId")
    if not command_id:
        raise MalformedRequest("Send needs a CommandId")
    try:
        data = base64.b64decode("".join((stream.text or "").split()), validate=True)
    except ValueError as exc:
        raise MalformedRequest("stdin is not base64") from exc
    return StdinChunk(command_id, data, (stream.get("End") or "false").lower() == "true")


def signal_code(req: WSManRequest) -> str:
    code = _text(req.body.find("rsp:Code", NS)) if req.body is not None else None
    return (code or "").rsplit("/", 1)[-1]


def new_id() -> str:
    # Windows hands out upper-case GUIDs for shells, commands and messages.
    return str(uuid.uuid4()).upper()


def _envelope(action_uri: str, relates_to: str, body: str, *, lang: str = "en-US") -> bytes:
    namespaces = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items() if prefix != "f")
    return (
        f'<?xml version="1.0" ?><s:Envelope xml:lang="{lang}" {namespaces}>'
        "<s:Header>"
        f"<a:Action>{escape(action_uri)}</a:Action>"
        f"<a:MessageID>uuid:{new_id()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def create_response(req: WSManRequest, shell_id: str, *, address: str, owner: str, client_ip: str) -> bytes:
    body = (
        "<x:ResourceCreated>"
        f"<a:Address>{escape(address)}</a:Address>"
        "<a:ReferenceParameters>"
        f"<w:ResourceURI>{SHELL_RESOURCE_URI}</w:ResourceURI>"
        f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
        "</a:ReferenceParameters>"
        "</x:ResourceCreated>"
        # Windows Server 2012 and later also describe the new shell in the body.
        "<rsp:Shell>"
        f"<rsp:ShellId>{shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{SHELL_RESOURCE_URI}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
        "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin</rsp:InputStreams>"
        "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
        "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        "</rsp:Shell>"
    )
    return _envelope(_TRANSFER + "CreateResponse", req.message_id, body)


def command_response(req: WSManRequest, command_id: str) -> bytes:
    body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    return _envelope(_SHELL + "CommandResponse", req.message_id, body)


def receive_response(
    req: WSManRequest, command_id: str, *, stdout: bytes, stderr: bytes, exit_code: int | None
) -> bytes:
    """Output of a command; `exit_code` None means it is still running (no End markers yet)."""
    cid = quoteattr(command_id)
    parts = ["<rsp:ReceiveResponse>"]
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if data:
            parts.append(f'<rsp:Stream Name="{name}" CommandId={cid}>{base64.b64encode(data).decode()}</rsp:Stream>')
    if exit_code is None:
        parts.append(f'<rsp:CommandState CommandId={cid} State="{COMMAND_STATE_RUNNING}"/>')
    else:
        # Windows closes each stream with an empty End="true" element, then reports Done + ExitCode.
        parts.append(f'<rsp:Stream Name="stdout" CommandId={cid} End="true"></rsp:Stream>')
        parts.append(f'<rsp:Stream Name="stderr" CommandId={cid} End="true"></rsp:Stream>')
        parts.append(
            f'<rsp:CommandState CommandId={cid} State="{COMMAND_STATE_DONE}">'
            f"<rsp:ExitCode>{exit_code}</rsp:ExitCode></rsp:CommandState>"
        )
    parts.append("</rsp:ReceiveResponse>")
    return _envelope(_SHELL + "ReceiveResponse", req.message_id, "".join(parts))


def send_response(req: WSManRequest) -> bytes:
    return _envelope(_SHELL + "SendResponse", req.message_id, "<rsp:SendResponse/>")


def signal_response(req: WSManRequest) -> bytes:
    return _envelope(_SHELL + "SignalResponse", req.message_id, "<rsp:SignalResponse/>")


def delete_response(req: WSManRequest) -> bytes:
    return _envelope(_TRANSFER + "DeleteResponse", req.message_id, "")


def fault_response(fault: Fault, *, relates_to: str, machine: str) -> bytes:
    code_attr = f' Code="{fault.wsman_code}"' if fault.wsman_code is not None else ""
    body = (
        "<s:Fault>"
        f"<s:Code><s:Value>{fault.code}</s:Value>"
        f"<s:Subcode><s:Value>{fault.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text></s:Reason>'
        "<s:Detail>"
        f'<f:WSManFault xmlns:f="{NS["f"]}"{code_attr} Machine={quoteattr(machine)}>'
        f"<f:Message>{escape(fault.reason)}</f:Message></f:WSManFault>"
        "</s:Detail>"
        "</s:Fault>"
    )
    return _envelope(FAULT_ACTION, relates_to, body)


def _text(element: ET.Element | None) -> str | None:
    return element.text.strip() if element is not None and element.text is not None else None
