"""How a script reaches Windows and how its output comes back: the $Params literal, code pages, the script on
stdin, and stderr. Real pywinrm through WinRMExecutor against the sandbox host over HTTP."""

from __future__ import annotations

import base64
import re

import pytest

from bot.systems.winrm import (
    CMD_LINE_LIMIT,
    CommandOutcomeUnknown,
    ScriptFailed,
    build_script,
    clean_stderr,
    command_line,
    powershell_literal,
)
from sandbox.handler_base import script_exit
from sandbox.ps_handlers import HANDLERS, HandlerResult
from sandbox.threaded import running_host
from tests.systems.faults import server_error_on
from tests.systems.test_winrm_executor import executor_for

# Every character PowerShell's tokenizer treats as a single quote (CharExtensions.IsSingleQuote).
QUOTES = "'\u2018\u2019\u201a\u201b"
NON_ASCII = "Müller — 東京 ’ Ωmega"


def echo(state, params) -> HandlerResult:
    return HandlerResult(stdout={"echo": dict(params)})


def sized(state, params) -> HandlerResult:
    return HandlerResult(stdout={"length": len(params.get("Padding", ""))})


def unicode_out(state, params) -> HandlerResult:
    return HandlerResult(stdout={"name": NON_ASCII})


def fails_plainly(state, params) -> HandlerResult:
    return script_exit(f"disk too small for {NON_ASCII} & <friends>", 3)


TEST_HANDLERS = {**HANDLERS, "echo": echo, "sized": sized, "unicode_out": unicode_out, "fails_plainly": fails_plainly}


@pytest.fixture
def scripts(tmp_path):
    for name in ("echo", "sized", "unicode_out", "fails_plainly"):
        (tmp_path / f"{name}.ps1").write_text(
            f"# idm-upgrade: {name}\n$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n"
            "@{} | ConvertTo-Json -Compress -Depth 5\n"
        )
    return tmp_path


def single_quoted_end(line: str, start: int) -> int:
    """Where a single-quoted string opened at `start` ends, by PowerShell's rule: any quote character
    closes it unless another quote character follows (then the pair is one literal character)."""
    i = start + 1
    while i < len(line):
        if line[i] in QUOTES:
            if i + 1 < len(line) and line[i + 1] in QUOTES:
                i += 2
                continue
            return i
        i += 1
    raise AssertionError("the string is never closed")


# ----- 1. every single-quote character PowerShell knows -----------------------------------------------


def test_every_single_quote_character_is_doubled_and_never_closes_the_literal():
    value = f"a{QUOTES}b ; Remove-Item C:\\ ; '"
    literal = powershell_literal({"Name": value})
    for quote in QUOTES:
        # doubled explicitly, not left to json.dumps' \\u escapes (which ensure_ascii=False would drop)
        assert quote * 2 in literal, hex(ord(quote))
    first_line = build_script("boottime", {"Name": value}).splitlines()[0]
    start = first_line.index(literal)
    assert single_quoted_end(first_line, start) == start + len(literal) - 1
    assert first_line[start + len(literal) :] == " | ConvertFrom-Json"


async def test_quote_characters_reach_the_script_as_data(scripts):
    value = f"it{QUOTES}s $(Remove-Item C:\\) {NON_ASCII}"
    with running_host(handlers=TEST_HANDLERS) as host:
        executor = executor_for(host, scripts_dir=scripts)
        result = await executor.run("host01", "echo", {"Name": value, "Each": list(QUOTES)})
        assert result.data == {"echo": {"Name": value, "Each": list(QUOTES)}}
        executor.close()


# ----- 2. output in the code page the shell was opened with --------------------------------------------


async def test_non_ascii_output_arrives_intact(scripts):
    with running_host(handlers=TEST_HANDLERS) as host:
        executor = executor_for(host, scripts_dir=scripts)
        result = await executor.run("host01", "unicode_out")
        assert result.data == {"name": NON_ASCII}
        creates = [r for r in host.requests if r.action == "Create"]
        assert [r.detail for r in creates] == ["codepage 65001"]
        executor.close()


def test_the_bootstrap_makes_powershell_write_utf8():
    bootstrap = decoded_bootstrap()
    assert "[Console]::OutputEncoding = New-Object Text.UTF8Encoding $false" in bootstrap
    # PowerShell 4.0 has no ::new(); New-Object works on 4.0 and 5.1
    assert "::new(" not in bootstrap


# ----- 3. the script on stdin -------------------------------------------------------------------------


def decoded_bootstrap() -> str:
    line = command_line()
    assert line.startswith("powershell.exe -NoProfile -NonInteractive -EncodedCommand ")
    return base64.b64decode(line.rsplit(" ", 1)[1]).decode("utf-16-le")


def test_the_command_line_is_a_short_fixed_bootstrap_that_runs_stdin_as_one_script_block():
    assert command_line() == command_line()
    assert len(command_line()) < CMD_LINE_LIMIT // 4
    bootstrap = decoded_bootstrap()
    assert re.search(r"\.ReadToEnd\(\)", bootstrap)
    assert "[ScriptBlock]::Create(" in bootstrap  # one script block, not `-Command -` line by line
    assert bootstrap.index("$ProgressPreference = 'SilentlyContinue'") < bootstrap.index("New-Object")


async def test_a_script_far_over_the_command_line_limit_runs_from_stdin(scripts):
    padding = "x" * 20_000
    with running_host(handlers=TEST_HANDLERS) as host:
        executor = executor_for(host, scripts_dir=scripts)
        result = await executor.run("host01", "sized", {"Padding": padding})
        assert result.data == {"length": 20_000}
        actions = [r.action for r in host.requests]
        assert actions[:3] == ["Create", "Command", "Send"]
        command, send = host.requests[1], host.requests[2]
        assert command.script is None and command.detail == "reading stdin"
        assert (send.script, send.detail) == ("sized", "stdin ended")
        assert send.params == {"Padding": padding}
        executor.close()


async def test_a_lost_send_is_not_resent_unless_the_script_is_safe(scripts):
    with running_host(handlers=TEST_HANDLERS) as host:
        executor = executor_for(host, scripts_dir=scripts)
        # The command exists on the host; the Send that carries the script gets a 500, so the client cannot know whether the script arrived and runs.
        arm = server_error_on(executor, host, "send_command_input", times=2)  # the first attempt of each run below
        with pytest.raises(CommandOutcomeUnknown) as caught:
            await executor.run("host01", "echo", {"A": 1})
        assert "may be running" in str(caught.value)
        assert arm["left"] == 1  # not sent again
        assert host.stats["shells_open"] == 0  # the shell (and the waiting command) were deleted
        result = await executor.run("host01", "echo", {"A": 1}, retry_safe=True)
        assert result.attempts == 2 and result.data == {"echo": {"A": 1}}
        executor.close()


# ----- 4. failure text next to a progress record ------------------------------------------------------


def test_the_prologue_silences_progress_and_errors_before_it_calls_a_cmdlet():
    first = build_script("boottime", {"A": 1}).splitlines()[0]
    assert first.startswith("$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'; ")
    assert first.index("$ProgressPreference") < first.index("ConvertFrom-Json")
    assert first.endswith("""$Params = '{"A":1}' | ConvertFrom-Json""")
    assert build_script("boottime", {"A": 1}).splitlines()[1] == "# idm-upgrade: boottime"


async def test_a_plain_failure_message_arrives_whole_and_without_clixml(scripts):
    with running_host(handlers=TEST_HANDLERS) as host:
        executor = executor_for(host, scripts_dir=scripts)
        with pytest.raises(ScriptFailed) as caught:
            await executor.run("host01", "fails_plainly")
        assert caught.value.exit_code == 3
        assert caught.value.stderr == f"disk too small for {NON_ASCII} & <friends>"
        executor.close()


def test_clean_stderr_keeps_text_outside_the_clixml_records():
    raw = (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
        '<MS><PR N="Record"><AV>Preparing modules for first use.</AV></PR></MS></Obj>'
        f"stage: download failed for {NON_ASCII} & <x>\r\n"
        '<S S="Error">disk too small_x000D__x000A_</S><S S="warning">not an error</S></Objs>'
        "after the document\r\n"
    ).encode()
    assert clean_stderr(raw) == f"stage: download failed for {NON_ASCII} & <x>\ndisk too small\nafter the document"
    # plain text before any CLIXML is kept too, and a document with only progress leaves nothing
    assert clean_stderr(b"plain first\r\n" + raw[: raw.index(b"</Obj>") + 6] + b"</Objs>") == "plain first"


def test_the_bootstrap_parses_and_runs_on_windows_powershell_40_and_51():
    from tests.steps.test_powershell_scripts import parse_errors

    bootstrap = decoded_bootstrap()
    assert parse_errors(bootstrap.encode()) == []
    compat = pytest.importorskip("tests.steps.test_powershell_compat")
    assert compat.compatibility_findings(bootstrap) == []
    assert compat.powershell_7_findings(bootstrap) == []
