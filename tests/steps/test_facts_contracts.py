"""Every script's JSON has a typed contract (steps/facts.py), and the contract holds on real Windows PowerShell 5.1.

Documents are derived from each model's own fields, so a field added later is covered too. Each clean document is
then rewritten into the shapes Windows PowerShell 5.1's ConvertTo-Json really produces (field-notes section 8): a
Get-Content line as an object whose text is its ``value``, a one-element array as a bare scalar, ``null`` for an
empty array, numbers as strings, ``\\/Date(ms)\\/`` for a DateTime (and Get-Date's ``{"value": ..., "DisplayHint"}``),
optional keys left out. Every such document must read as the same facts as the clean one. Anything else, however
malformed, is either accepted or a clear ``SCRIPT: bad output: FIELD: msg`` error, never a KeyError/TypeError/....
"""

from __future__ import annotations

import json
import re
import types
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from bot.systems.winrm import BadOutput
from steps.facts import (
    BootTime,
    Facts,
    FileHash,
    HostFacts,
    InstallStarted,
    InstallStatus,
    Instant,
    IsoTime,
    Product,
    RebootIssued,
    ServiceStatus,
    Staged,
    TextLines,
)

HOST = "idm01.corp.example.com"
PS_DIR = Path(__file__).resolve().parents[2] / "steps" / "ps"

# script (steps/ps/NAME.ps1) -> the model its one JSON document is read as
CONTRACTS: dict[str, type[Facts]] = {
    "preflight": HostFacts,
    "boottime": BootTime,
    "filehash": FileHash,
    "stage": Staged,
    "install_start": InstallStarted,
    "install_status": InstallStatus,
    "product": Product,
    "service": ServiceStatus,
    "reboot": RebootIssued,
}
SCRIPTS = sorted(CONTRACTS)
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bad_output_pattern(script: str, field: str = r"[\w.]+|\(the document\)") -> str:
    return rf"^{re.escape(HOST)}: {re.escape(script)}: bad output: (?:{field}): (?=\S)"


# -- what a field is, from the model itself ----------------------------------------------------------


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def kind(field: FieldInfo) -> tuple[Any, bool]:
    """("lines" | "iso" | "instant" | bool | int | float | str | a Facts model, may be null)."""
    annotation = typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    base, nullable = _strip_none(annotation)
    for name, known in (("lines", TextLines), ("iso", IsoTime), ("instant", Instant)):
        if base == known:
            return name, nullable
    if base in (bool, int, float, str) or (isinstance(base, type) and issubclass(base, Facts)):
        return base, nullable
    raise AssertionError(f"no document strategy for {annotation!r}: teach this test the new field type")


def alias(model: type[Facts], name: str) -> str:
    field = model.model_fields[name]
    return field.alias or name


# -- clean documents --------------------------------------------------------------------------------


def mojibake(text: str) -> str:
    """UTF-8 read as code page 437/1252: what a shell without codepage 65001 hands over."""
    return text.encode("utf-8").decode("cp437")


TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["Zürich – Ünïcødé ’s", "Überprüfung fehlgeschlagen", "C:\\Program Files\\VMware"]).map(mojibake),
    st.sampled_from(["Running", "Auto", "19.03.0.1", "VMwareIDMConnector", ""]),
)
WHOLE_SECONDS = st.integers(0, 4_102_444_800).map(lambda s: EPOCH + timedelta(seconds=s))


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def value_for(k: Any) -> st.SearchStrategy[Any]:
    if k == "lines":
        return st.lists(TEXT, max_size=4)
    if k in ("iso", "instant"):
        return WHOLE_SECONDS.map(iso)
    if k is bool:
        return st.booleans()
    if k is int:
        return st.integers(-(2**31), 2**40)
    if k is float:
        return st.floats(0, 1e6, allow_nan=False).map(lambda f: round(f, 2))
    if k is str:
        return TEXT
    return document(k)


def document(model: type[Facts]) -> st.SearchStrategy[dict[str, Any]]:
    """A clean document: camelCase keys, JSON types; optional keys sometimes null, always present."""
    parts = {}
    for name, field in model.model_fields.items():
        k, nullable = kind(field)
        strategy = value_for(k)
        parts[alias(model, name)] = st.one_of(st.none(), strategy) if nullable else strategy
    return st.fixed_dictionaries(parts)


# -- the shapes Windows PowerShell 5.1 writes -------------------------------------------------------


def get_content_line(text: str, number: int) -> dict[str, Any]:
    """A line from Get-Content as 5.1's ConvertTo-Json writes it: the string with its NoteProperties."""
    path = "C:\\VMware\\VMwareIdentityManager\\Connector\\opt\\vmware\\horizon\\workspace\\logs\\connector.log"
    return {
        "value": text,
        "PSPath": f"Microsoft.PowerShell.Core\\FileSystem::{path}",
        "PSParentPath": "Microsoft.PowerShell.Core\\FileSystem::" + path.rsplit("\\", 1)[0],
        "PSChildName": "connector.log",
        "PSDrive": {"CurrentLocation": "Users\\svc-idm", "Name": "C", "Root": "C:\\", "Description": ""},
        "PSProvider": {"ImplementingType": "Microsoft.PowerShell.Commands.FileSystemProvider", "Name": "FileSystem"},
        "ReadCount": number,
    }


def ms_date(text: str) -> str:
    """ "2023-11-14T22:13:20Z" -> "/Date(1700000000000)/" (the text behind 5.1's "\\/Date(...)\\/")."""
    when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return f"/Date({(when - EPOCH) // timedelta(milliseconds=1)})/"


@st.composite
def as_windows_powershell_51(draw: st.DrawFn, model: type[Facts], doc: Any) -> Any:
    """The same facts in the shapes Windows PowerShell 5.1 may write; None means 'leave the key out'."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = alias(model, name)
        value = doc[key]
        k, nullable = kind(field)
        if not field.is_required() and draw(st.integers(0, 5)) == 0:
            continue  # a missing optional key
        if value is None:
            out[key] = None
        elif k == "lines":
            items = [get_content_line(t, i + 1) if draw(st.booleans()) else t for i, t in enumerate(value)]
            if not items:
                out[key] = draw(st.sampled_from([None, []]))  # 5.1 writes $null for an empty array
            elif len(items) == 1 and draw(st.booleans()):
                out[key] = items[0]  # a one-element array comes out as the bare element
            else:
                out[key] = items
        elif k == "instant":
            shape = draw(st.sampled_from(["iso", "ms", "get-date"]))
            if shape == "ms":
                out[key] = ms_date(value)
            elif shape == "get-date":
                out[key] = {"value": ms_date(value), "DisplayHint": 2, "DateTime": "Tuesday, 14 November 2023"}
            else:
                out[key] = value
        elif k == "iso":
            out[key] = draw(st.sampled_from([value, ms_date(value)]))
        elif k is int or k is float:
            out[key] = draw(st.sampled_from([value, str(value)]))
        elif isinstance(k, type) and issubclass(k, Facts):
            out[key] = draw(as_windows_powershell_51(k, value))
        else:
            out[key] = value
    return out


def defaults_filled(model: type[Facts], shaped: dict[str, Any], clean: dict[str, Any]) -> dict[str, Any]:
    """The clean document with every key the 5.1 shape left out set to what the model defaults it to."""
    out = {}
    for name, field in model.model_fields.items():
        key = alias(model, name)
        k, _ = kind(field)
        if key not in shaped:
            default = field.get_default(call_default_factory=True)
            out[key] = default.model_dump(by_alias=True, mode="json") if isinstance(default, Facts) else default
        elif isinstance(k, type) and issubclass(k, Facts) and clean[key] is not None:
            out[key] = defaults_filled(k, shaped[key], clean[key])
        else:
            out[key] = clean[key]
    return out


def read(script: str, data: Any) -> Facts:
    return CONTRACTS[script].from_script(HOST, script, data)


def read_or_refuse(script: str, data: Any) -> Facts | None:
    """The contract for any document at all: facts, or a clear bad-output error; nothing else escapes."""
    try:
        return read(script, data)
    except BadOutput as exc:
        assert re.match(bad_output_pattern(script), str(exc)), str(exc)
        return None


# -- the tests --------------------------------------------------------------------------------------


def test_every_script_has_a_contract():
    assert {p.stem for p in PS_DIR.glob("*.ps1")} == set(CONTRACTS)


@pytest.mark.parametrize("script", SCRIPTS)
@EXAMPLES
@given(data=st.data())
def test_windows_powershell_51_shapes_read_as_the_clean_document(script, data):
    model = CONTRACTS[script]
    clean = data.draw(document(model), label="clean")
    shaped = data.draw(as_windows_powershell_51(model, clean), label="as 5.1 writes it")
    assert read(script, shaped).model_dump() == read(script, defaults_filled(model, shaped, clean)).model_dump()


@pytest.mark.parametrize("script", SCRIPTS)
@EXAMPLES
@given(data=st.data())
def test_the_clean_document_round_trips_through_the_stored_facts(script, data):
    model = CONTRACTS[script]
    facts = read(script, data.draw(document(model)))
    assert model.stored(facts.dump()) == facts


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | TEXT
    | st.just("/Date(99999999999999999)/"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def spoiled(draw: st.DrawFn, doc: Any) -> Any:
    """The document with one value anywhere in it replaced by any JSON at all."""
    if not isinstance(doc, dict) or not doc or draw(st.integers(0, 3)) == 0:
        return draw(JSON)
    key = draw(st.sampled_from(sorted(doc)))
    return {**doc, key: draw(spoiled(doc[key]))}


@pytest.mark.parametrize("script", SCRIPTS)
@EXAMPLES
@given(data=st.data())
def test_any_document_is_facts_or_a_clear_bad_output_error(script, data):
    clean = data.draw(document(CONTRACTS[script]))
    read_or_refuse(script, data.draw(spoiled(clean)))


def required_paths(model: type[Facts], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        if field.is_required():
            path = prefix + alias(model, name)
            paths.append(path)
            k, _ = kind(field)
            if isinstance(k, type) and issubclass(k, Facts):
                paths += required_paths(k, path + ".")
    return paths


def without(doc: dict[str, Any], path: str) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {k: v for k, v in doc.items() if k != head} if not rest else {**doc, head: without(doc[head], rest)}


REQUIRED = [(script, path) for script in SCRIPTS for path in required_paths(CONTRACTS[script])]


@pytest.mark.parametrize(("script", "path"), REQUIRED, ids=[f"{s}-{p}" for s, p in REQUIRED])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_a_missing_required_field_names_the_script_and_the_field(script, path, data):
    doc = without(data.draw(document(CONTRACTS[script])), path)
    with pytest.raises(BadOutput, match=bad_output_pattern(script, re.escape(path)) + ".*Field required"):
        read(script, doc)


def scalar_text_paths(model: type[Facts], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        k, _ = kind(field)
        path = prefix + alias(model, name)
        if k is str:
            paths.append(path)
        elif isinstance(k, type) and issubclass(k, Facts):
            paths += scalar_text_paths(k, path + ".")
    return paths


def replaced(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {**doc, head: value if not rest else replaced(doc[head] or {}, rest, value)}


SCALAR_TEXT = [(script, path) for script in SCRIPTS for path in scalar_text_paths(CONTRACTS[script])]


@pytest.mark.parametrize(("script", "path"), SCALAR_TEXT, ids=[f"{s}-{p}" for s, p in SCALAR_TEXT])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_a_get_content_object_where_one_string_belongs_is_refused_by_name(script, path, data):
    """Field notes 8: an unwrapped Get-Content result in a scalar is a script defect, named, not an AttributeError."""
    doc = replaced(data.draw(document(CONTRACTS[script])), path, get_content_line("19.03.0.1", 1))
    with pytest.raises(BadOutput, match=bad_output_pattern(script, re.escape(path)) + ".*valid string"):
        read(script, doc)


# -- the shapes, spelled out as Windows PowerShell 5.1 writes them (JSON text, escapes and all) -----------


def test_install_status_from_windows_powershell_51():
    line = json.dumps(get_content_line("Installation success or error status: 0.", 40))
    text = (
        '{"known":true,"token":"run-1-install","pid":"4242","startedAt":"\\/Date(1700000000000)\\/",'
        f'"running":false,"exitCode":"0","logTail":{line},"msiBusy":false}}'
    )
    status = read("install_status", json.loads(text))
    assert status == InstallStatus(
        known=True,
        token="run-1-install",
        pid=4242,
        started_at="2023-11-14T22:13:20Z",
        running=False,
        exit_code=0,
        log_tail=["Installation success or error status: 0."],
    )


def test_preflight_from_windows_powershell_51():
    text = (
        '{"computerName":"IDM01","connector":{"installed":true,"displayName":"VMware Identity Manager Connector",'
        '"version":"19.03.0.0"},"service":{"name":"VMwareIDMConnector","exists":true,"state":"Running",'
        '"startMode":"Auto"},"java":{"home":null,"version":null},"disk":{"drive":"C:","freeBytes":"53687091200"},'
        '"pendingReboot":{"any":true,"reasons":"WindowsUpdate"},"bootTime":"\\/Date(1700000000000)\\/"}'
    )
    host = read("preflight", json.loads(text))
    assert host.pending_reboot.reasons == ["WindowsUpdate"]
    assert host.disk.free_bytes == 53_687_091_200
    assert host.boot_time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert read("preflight", json.loads(text.replace('"WindowsUpdate"', "null"))).pending_reboot.reasons == []


def test_boot_times_are_one_instant_in_utc_whatever_the_shape():
    shapes = [
        "2023-11-14T22:13:20Z",
        "/Date(1700000000000)/",
        "/Date(1700000000000+0100)/",
        "2023-11-14T23:13:20+01:00",
    ]
    times = [read("boottime", {"bootTime": shape}).boot_time for shape in shapes]
    assert times == [datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)] * len(shapes)
    assert all(t.utcoffset() == timedelta(0) for t in times)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2023-11-14T22:13:20", "timezone"),  # no Z: it could be any zone, and comparing it later would raise
        ("/Date(99999999999999999)/", "out of range"),
        ({"value": "yesterday", "DisplayHint": 2}, "datetime"),
        (["2023-11-14T22:13:20Z"], "datetime"),
    ],
)
def test_a_boot_time_that_is_not_one_instant_is_refused(value, message):
    with pytest.raises(BadOutput, match=bad_output_pattern("boottime", "bootTime") + f".*{message}"):
        read("boottime", {"bootTime": value})


@pytest.mark.parametrize("line", [None, 7, {"PSPath": "C:\\x"}, {"value": None}, ["nested"]])
def test_a_log_line_that_is_not_text_is_refused_by_name(line):
    with pytest.raises(BadOutput, match=bad_output_pattern("service", r"logTail") + ".*line"):
        read("service", {"exists": True, "logTail": ["ok", line]})


def test_a_document_that_is_not_an_object_is_refused():
    for data in (None, [], ["x"], "text", 3):
        with pytest.raises(BadOutput, match=bad_output_pattern("product", r"\(the document\)")):
            read("product", data)
