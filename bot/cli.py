"""The `idm-upgrade` command line. Bad configuration exits 2 with one line per problem, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bot.core.config import Config, ConfigError, Secrets, config_path, load_config
from bot.core.needs import needed_secrets, serve_refusals
from bot.core.probes import Probe
from bot.core.redact import public_url
from bot.core.signing import SigningKeyError, key_id
from bot.runtime import audit_signer
from bot.store import audit, checkpoints
from bot.store.files import PrivateFileError
from bot.store.store import Store, StoreError
from bot.terminal import audit as audit_cli

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; the examples at the end (the epilog) line by line, as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def _command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary (in the list), what it does, and examples (at the end of --help)."""
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=_Formatter,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idm-upgrade",
        description="Upgrade the Windows VMware Identity Manager connector to 19.03.0.1 over WinRM, "
        "with Slack approvals and a verifiable audit trail.",
        epilog="examples:\n  idm-upgrade check-config\n  idm-upgrade serve\n  idm-upgrade sandbox\n"
        "  idm-upgrade COMMAND --help",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"idm-upgrade {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            metavar="F",
            help="configuration file (default: $IDM_UPGRADE_CONFIG, else ./idm-upgrade.toml)",
        )
        return p

    serve = with_config(
        _command(
            sub,
            "serve",
            "run the Slack bot",
            "Run the Slack bot until SIGTERM or Ctrl-C: Socket Mode when SLACK_APP_TOKEN is set (or --socket-mode), "
            "else HTTP (POST /slack/events, GET /healthz). Secrets come from the environment (README, Secrets).",
            "  idm-upgrade serve --config /etc/idm-upgrade/idm-upgrade.toml\n  idm-upgrade serve --http --port 3000",
        )
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--http", action="store_true", help="serve Slack over HTTP (POST /slack/events)")
    mode.add_argument("--socket-mode", action="store_true", help="connect to Slack with Socket Mode")
    serve.add_argument("--port", type=int, default=3000, help="TCP port --http listens on (default: 3000)")
    serve.add_argument(
        "--bind",
        metavar="ADDR",
        help="address --http listens on (default: http.bind, which is 127.0.0.1; 0.0.0.0 only behind a proxy)",
    )

    run = with_config(
        _command(
            sub,
            "run",
            "upgrade hosts from the terminal (approvals at the prompt)",
            "Drive the same engine as the Slack bot from a terminal, for when Slack is down: the approvals are "
            "asked at the prompt and recorded as cli:<os user> in the same audit trail.",
            "  idm-upgrade run host01\n  idm-upgrade run host01 host02 --check",
        )
    )
    run.add_argument("hosts", nargs="+", metavar="HOST")
    run.add_argument(
        "--check",
        action="store_true",
        help="dry run: preflight, then what each step would do (the plan); change nothing",
    )
    run.add_argument(
        "--yes", action="store_true", help="approve gated steps without asking (only if terminal.allow_yes = true)"
    )
    run.add_argument("--ticket", metavar="ID", help="the change ticket that authorizes the run ([change])")

    retry = with_config(
        _command(
            sub,
            "retry",
            "try a failed run again from its failed step (approvals at the prompt)",
            "Try a failed run again from its failed step, as its next attempt: that step checks the host again, "
            "asks again for any approval it needs, and the steps that succeeded are not repeated. Driven at the "
            "terminal like `run`; the rest of its batch stays cancelled. Exit 0 succeeded, 1 not, 2 refused.",
            "  idm-upgrade retry run-1a2b3c4d\n  idm-upgrade retry run-1a2b3c4d --why 'disk freed on C:'",
        )
    )
    retry.add_argument("run_id", metavar="RUN", help="the failed run's id (run-…)")
    retry.add_argument("--why", metavar="TEXT", help="why it is tried again (recorded in the audit trail)")

    revert = with_config(
        _command(
            sub,
            "revert",
            "revert a failed or denied run's VM to its snapshot (approval at the prompt)",
            "Revert the VM of a run that ended failed or denied, after its installer ran or its server rebooted, "
            "to the snapshot the run took: the revert approval is asked at the prompt, then vCenter reverts and "
            "powers the VM on (without vCenter a person does it and confirms), and the bot checks the connector "
            "is back at its version before the run and its service Running.",
            "  idm-upgrade revert run-4e263407\n  idm-upgrade revert run-4e263407 --why 'wrong build installed'",
        )
    )
    revert.add_argument("run_id", metavar="RUN")
    revert.add_argument("--why", metavar="TEXT", help="why the revert is asked (audited, shown in the request)")

    sandbox = _command(
        sub,
        "sandbox",
        "watch a complete upgrade against simulated hosts",
        "Watch a complete upgrade in Slack form against simulated hosts, a Slack stand-in and a Workspace ONE "
        "stand-in on 127.0.0.1: no Slack, no Windows server, no credentials. `sandbox host` serves one simulated "
        "host instead, for tools and tests (idm-upgrade sandbox host --help).",
        "  idm-upgrade sandbox\n  idm-upgrade sandbox --hosts 3\n"
        "  idm-upgrade sandbox --scenario install-fails-1603 --approve prompt\n"
        "  idm-upgrade sandbox --servicenow\n"
        "  idm-upgrade sandbox host --name host01 --port 0",
    )
    # one usage per form: the `host` subcommand is a form of its own, not an argument of the first one
    sandbox.usage = (
        "idm-upgrade sandbox [--hosts N] [--scenario NAME] [--approve auto|prompt] [--database PATH] "
        "[--servicenow] [--home]\n"
        "       idm-upgrade sandbox host --name NAME --port PORT [--scenario NAME]"
    )
    sandbox.add_argument("--hosts", type=int, default=1, metavar="N", help="hosts to upgrade, one after another (1-50)")
    sandbox.add_argument(
        "--scenario",
        default="default",
        metavar="NAME",
        help="what the hosts do (default: default, all goes well); an unknown name prints the list",
    )
    sandbox.add_argument(
        "--approve",
        choices=["auto", "prompt"],
        default="auto",
        help="auto: the sandbox approves each request (default); prompt: you answer at the terminal",
    )
    sandbox.add_argument("--database", metavar="PATH", help="keep the sandbox's database (and its audit trail) here")
    sandbox.add_argument(
        "--servicenow",
        action="store_true",
        help='tickets required ([change] ticket = "required"), checked in a ServiceNow stand-in that has change '
        "CHG0012345 approved, in Implement and in its planned dates; the command carries ticket:CHG0012345",
    )
    sandbox.add_argument(
        "--home",
        action="store_true",
        help="after the scenario, print the App Home (the fleet at a glance) as Slack shows it",
    )
    # listed in the usage and the description above, not as an argument of the first form
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", help=argparse.SUPPRESS)
    one_host = sandbox_sub.add_parser(
        "host",
        prog="idm-upgrade sandbox host",
        help="serve one simulated connector host over WinRM until interrupted; the first line of output "
        "is JSON {endpoint, username, password, scenario, installer_url, installer_sha256}",
        description="Serve one simulated connector host over WinRM on 127.0.0.1 until interrupted. The first line "
        "of output is JSON {endpoint, username, password, scenario, installer_url, installer_sha256}.",
        epilog="examples:\n  idm-upgrade sandbox host --name host01 --port 0\n"
        "  idm-upgrade sandbox host --name host02 --port 5986 --scenario install-fails-1603",
        formatter_class=_Formatter,
    )
    one_host.add_argument("--name", required=True, help="the host's name (becomes its computer name)")
    one_host.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free port)")
    one_host.add_argument("--scenario", default="default", help="host scenario (default: default)")

    audit_cmd = _command(
        sub,
        "audit",
        "export or verify the audit trail",
        "The audit trail: export it, verify its hash chain, write and list signed checkpoints, create the key.",
        "  idm-upgrade audit export --format csv > audit.csv\n  idm-upgrade audit verify --checkpoints slack",
    )
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    export = with_config(
        _command(
            audit_sub,
            "export",
            "print audit events (JSON array or CSV)",
            "Print the audit events, oldest first: a JSON array, or CSV with a header. An unknown --run exits 1.",
            "  idm-upgrade audit export > audit.json\n  idm-upgrade audit export --format csv --run run-777d39e0",
        )
    )
    export.add_argument("--format", choices=["json", "csv"], default="json", help="json (default) or csv")
    export.add_argument("--run", metavar="ID", help="only the events of this run")
    verify = with_config(
        _command(
            audit_sub,
            "verify",
            "check the hash chain; exit 0 when intact",
            "Check the hash chain: exit 0 when intact, 1 naming the first edited, deleted or inserted event.",
            "  idm-upgrade audit verify\n  idm-upgrade audit verify --checkpoints checkpoints.json",
        )
    )
    verify.add_argument(
        "--checkpoints",
        metavar="FILE|slack",
        help="also check the chain against checkpoints kept outside the database: a file (as `audit checkpoints` "
        "prints them) or `slack` (read back from the channel's history)",
    )
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        action="append",
        help="a key the checkpoints must be signed with, ed25519:BASE64 as keygen printed it; repeat it for the "
        "keys before a rotation (default: audit.public_key, else the public half of audit.signing_key_file)",
    )
    with_config(
        _command(
            audit_sub,
            "checkpoint",
            "write a checkpoint of the trail now (signed when a key is configured) and print it",
            "Write a checkpoint of the trail now (last seq, head hash, count; signed when audit.signing_key_file "
            "is set) and print it.",
            "  idm-upgrade audit checkpoint >> checkpoints.txt",
        )
    )
    with_config(
        _command(
            audit_sub,
            "checkpoints",
            "print the checkpoints written so far (a JSON array)",
            "Print the checkpoints written so far, a JSON array that audit verify --checkpoints FILE reads.",
            "  idm-upgrade audit checkpoints > checkpoints.json",
        )
    )
    keygen = _command(
        audit_sub,
        "keygen",
        "create the checkpoint signing key (mode 0600; never overwrites) and print its public key",
        "Create the Ed25519 key that signs the checkpoints (mode 0600; an existing file is never overwritten) "
        "and print its public key for audit.public_key.",
        "  idm-upgrade audit keygen --out /etc/idm-upgrade/audit.key",
    )
    keygen.add_argument("--config", metavar="F", help="configuration file; its audit.signing_key_file is the default")
    keygen.add_argument("--out", metavar="FILE", help="where to create the key")

    check = with_config(
        _command(
            sub,
            "check-config",
            "validate the configuration and print a summary",
            "Validate the configuration and print hosts, approvers and modes (never a secret, only whether each "
            "is set). Exit 1 when serve would refuse to start. --probe also reaches every configured system "
            "with read-only requests, one line per check.",
            "  idm-upgrade check-config\n  idm-upgrade check-config --probe",
        )
    )
    check.add_argument(
        "--probe",
        action="store_true",
        help="also try each host over WinRM (a read-only script), Workspace ONE, vCenter and Slack; changes nothing",
    )
    return parser


def version() -> str:
    """The installed package's version; from a source tree that is not installed, pyproject.toml's."""
    try:
        return importlib.metadata.version("idm-upgrade-bot")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with (Path(__file__).resolve().parents[1] / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _open_store(config: Config) -> Store:
    return Store(config.database.path)


def check_config(config: Config, source: str, out: TextIO | None = None, *, probe: bool = False) -> int:
    """Print what the configuration says, without secrets: only whether each one is set. Exit 1 when serve
    would refuse to start, or (with `probe`) when a system did not answer as a run needs."""
    out = out or sys.stdout
    secrets = Secrets.from_env()
    # serve's mode is not in the configuration: Socket Mode when SLACK_APP_TOKEN is set, HTTP otherwise
    socket_mode = secrets.slack_app_token is not None
    slack = config.slack
    out.write(f"configuration OK: {source}\n")
    out.write(f"hosts ({len(config.hosts)}):\n")
    for name in config.hosts:
        out.write(f"  {name:<20} {config.winrm_endpoint(name)}  transport={config.transport_for(name)}\n")
    out.write(f"slack channel: {slack.channel}\n")
    out.write(f"requesters: {'anyone in the workspace' if slack.anyone_may_request else ', '.join(slack.requesters)}\n")
    out.write(
        f"approvers: {', '.join(slack.approvers) or 'NONE'}; min_approvals={slack.min_approvals}, "
        f"self-approval {'allowed' if slack.allow_self_approval else 'refused'}, "
        f"requests expire after {slack.approval_timeout_minutes:g} min\n"
    )
    out.write(f"installer: {config.installer.version} from {public_url(config.installer.url)}\n")
    out.write(
        f"modes: pending_reboot={config.preflight.pending_reboot}, "
        f"directory_change={config.workspace_one.directory_change}, "
        f"snapshots={'vCenter' if config.vcenter.url else 'manual confirmation'}, "
        f"winrm max_parallel={config.winrm.max_parallel}, "
        f"install {'approved first' if config.policy.approve_install else 'WITHOUT approval'}\n"
    )
    out.write(f"database: {config.database.path}\n")
    refusals = serve_refusals(config, secrets, socket_mode=socket_mode)
    try:
        signer = audit_signer(config)
    except SigningKeyError as exc:
        out.write(f"error: {exc}; serve and run would refuse to start\n")
        for reason in refusals:
            out.write(f"serve would refuse: {reason}\n")
        return EXIT_FAILED
    out.write(
        f"audit checkpoints: every {config.audit.checkpoint_minutes:g} min while runs are active and at each "
        f"run's end, {'signed, key id ' + key_id(signer.public_key) if signer else 'NOT signed'}\n"
    )
    present = secrets.present()
    # only what the configuration uses: no VCENTER_* without vcenter.url, no WS1_* without workspace_one.url
    said = []
    for name in needed_secrets(config, socket_mode=True):
        if name == "SLACK_APP_TOKEN" and not present[name]:
            said.append(f"{name} missing (serve uses HTTP; --socket-mode would refuse)")
        else:
            said.append(f"{name} {'set' if present[name] else 'missing'}")
    out.write("environment: " + ", ".join(said) + f"; serve would use {'Socket Mode' if socket_mode else 'HTTP'}\n")
    warnings = []
    if slack.anyone_may_request:
        warnings.append('slack.requesters = ["anyone"]: every member of the workspace may start upgrades')
    if not config.policy.approve_install:
        warnings.append("policy.approve_install = false: the installer stops the connector without an approval")
    if (
        slack.approvers
        and not any(p.startswith("S") for p in slack.approvers)
        and len(slack.approvers) < slack.min_approvals
    ):
        warnings.append(f"slack.min_approvals = {slack.min_approvals} but only {len(slack.approvers)} approvers")
    if signer is None:
        warnings.append(
            "audit.signing_key_file is not set: checkpoints are not signed, so a person who can write the "
            "database could rewrite the trail and its checkpoints (create a key: idm-upgrade audit keygen)"
        )
    elif config.audit.public_key and config.audit.public_key.strip() != signer.public_key:
        warnings.append("audit.public_key is not the public half of audit.signing_key_file: verify will refuse")
    if config.winrm.server_cert_validation == "ignore":
        warnings.append("winrm.server_cert_validation = 'ignore': host certificates are not checked")
    if not config.workspace_one.url:
        warnings.append("workspace_one.url is not set: the STARTTLS step cannot use the API")
    for name in config.hosts:
        if config.transport_for(name) == "basic" and config.winrm_endpoint(name).startswith("http:"):
            warnings.append(f"hosts.{name}: basic authentication over plain http sends the password readable")
    for warning in warnings:
        out.write(f"warning: {warning}\n")
    for reason in refusals:
        out.write(f"serve would refuse: {reason}\n")
    failed = bool(refusals)
    if probe:
        out.flush()  # the summary first: the probes may take seconds
        for found in asyncio.run(_probe_everything(config, secrets)):
            out.write(found.line() + "\n")
            failed = failed or not found.ok
    return EXIT_FAILED if failed else EXIT_OK


async def _probe_everything(config: Config, secrets: Secrets) -> list[Probe]:
    """Every system at once (each probe is bounded); the lines in a fixed order: hosts, WS1, vCenter,
    ServiceNow, Slack."""
    from bot.slack.probe import probe_slack
    from bot.terminal.probe import probe_hosts, probe_servicenow, probe_vcenter, probe_workspace_one

    groups = await asyncio.gather(
        probe_hosts(config, secrets),
        probe_workspace_one(config, secrets),
        probe_vcenter(config, secrets),
        probe_servicenow(config, secrets),
        probe_slack(config, secrets),
    )
    return [found for group in groups for found in group]


def _serve_sandbox_host(name: str, port: int, scenario: str) -> int:
    from sandbox.host import SCENARIOS
    from sandbox.winrm_server import serve_host

    if scenario not in SCENARIOS:
        sys.stderr.write(f"idm-upgrade: unknown scenario {scenario!r}; choose one of: {', '.join(sorted(SCENARIOS))}\n")
        return EXIT_USAGE
    if not 0 <= port <= 65535:
        sys.stderr.write("idm-upgrade: --port must be 0-65535\n")
        return EXIT_USAGE
    try:
        serve_host(name, port, scenario)
    except OSError as exc:
        sys.stderr.write(f"idm-upgrade: cannot listen on 127.0.0.1:{port}: {exc.strerror}\n")
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: the last of the output may be what meets the closed pipe
    except BrokenPipeError:
        # the reader went away (`audit export | head`): no traceback. As the Python docs advise, point stdout at
        # /dev/null so that the interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sandbox":
        if importlib.util.find_spec("sandbox") is None:
            sys.stderr.write(
                "idm-upgrade: the sandbox is not installed here (the production image leaves it out); "
                "run it from a clone of the repository: make sandbox\n"
            )
            return EXIT_USAGE
        if args.sandbox_command == "host":
            return _serve_sandbox_host(args.name, args.port, args.scenario)
        import asyncio

        from sandbox.host import SCENARIOS
        from sandbox.run import CHANGE_SCENARIOS, run_sandbox

        if args.scenario not in (*SCENARIOS, *CHANGE_SCENARIOS):
            known = ", ".join((*SCENARIOS, *CHANGE_SCENARIOS))
            sys.stderr.write(f"idm-upgrade: unknown scenario {args.scenario!r}; choose one of: {known}\n")
            return EXIT_USAGE
        if not 1 <= args.hosts <= 50:
            sys.stderr.write("idm-upgrade: --hosts must be 1-50\n")
            return EXIT_USAGE
        try:
            return asyncio.run(
                run_sandbox(
                    args.hosts,
                    args.scenario,
                    args.approve,
                    database=_absolute(args.database),
                    servicenow=args.servicenow,
                    home=args.home,
                )
            )
        except KeyboardInterrupt:
            sys.stderr.write("\nsandbox stopped\n")
            return EXIT_FAILED
    if args.command == "audit" and args.audit_command == "keygen" and args.out:
        return audit_cli.keygen(args.out)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"config error: {problem}\n")
        return EXIT_USAGE
    if args.command == "check-config":
        return check_config(config, str(config_path(args.config)), probe=args.probe)
    if args.command == "serve":
        import asyncio

        from bot.slack.serve import serve

        try:
            return asyncio.run(
                serve(config, socket_mode=args.socket_mode, http=args.http, port=args.port, bind=args.bind)
            )
        except KeyboardInterrupt:
            return EXIT_OK
    if args.command == "run":
        import asyncio

        from bot.terminal.run import run_from_terminal

        try:
            return asyncio.run(
                run_from_terminal(config, args.hosts, check_only=args.check, yes=args.yes, ticket=args.ticket)
            )
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted: every run stays as recorded; `idm-upgrade run HOST` resumes it\n")
            return EXIT_FAILED
    if args.command == "retry":
        import asyncio

        from bot.terminal.retry import retry_from_terminal

        try:
            return asyncio.run(retry_from_terminal(config, args.run_id, why=args.why))
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted: the run stays as recorded; `idm-upgrade run HOST` resumes it\n")
            return EXIT_FAILED
    if args.command == "revert":
        import asyncio

        from bot.terminal.revert import revert_from_terminal

        try:
            return asyncio.run(revert_from_terminal(config, args.run_id, why=args.why))
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted: the revert stays as recorded; `idm-upgrade revert RUN` resumes it\n")
            return EXIT_FAILED
    if args.audit_command == "keygen":
        if config.audit.signing_key_file is None:
            sys.stderr.write(
                "idm-upgrade: say where the key goes: --out FILE, or audit.signing_key_file in the config\n"
            )
            return EXIT_USAGE
        return audit_cli.keygen(config.audit.signing_key_file)
    try:
        store = _open_store(config)
    except (StoreError, PrivateFileError, OSError) as exc:
        sys.stderr.write(f"idm-upgrade: cannot open the database {config.database.path}: {exc}\n")
        return EXIT_FAILED
    try:
        if args.audit_command == "export":
            # the trail is what is exported: a run it has no event of is unknown to it
            if args.run is not None and next(audit.events(store.conn, args.run), None) is None:
                sys.stderr.write(f"idm-upgrade: no such run {args.run}\n")
                return EXIT_FAILED
            writer = audit.export_json if args.format == "json" else audit.export_csv
            writer(store.conn, sys.stdout, args.run)
            return EXIT_OK
        if args.audit_command == "checkpoint":
            return audit_cli.checkpoint(config, store)
        if args.audit_command == "checkpoints":
            sys.stdout.write(checkpoints.export(store.conn))
            return EXIT_OK
        return audit_cli.verify(config, store, args.checkpoints, args.public_key, read_slack=_slack_checkpoints)
    finally:
        store.close()


def _slack_checkpoints(config: Config) -> tuple[list[checkpoints.Checkpoint], list[str]]:
    from bot.slack.witness import read_checkpoints

    token = Secrets.from_env().slack_bot_token
    if token is None:
        raise RuntimeError("SLACK_BOT_TOKEN is not set: reading the checkpoints from Slack needs the bot's token")
    return read_checkpoints(token.get_secret_value(), config.slack.channel)


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
