"""Builds what every front end runs on, once: the engine lease, the store, the services, the engine and its plan.

`serve` (Slack), `run` (terminal), the sandbox and the tests all start here, so the order is one: the lease
first (one engine per database), then the outside systems (the lease is given back if they cannot be
built), then the store and the engine. Test hooks (the crash tests' kill points) are injected here, from
the environment, and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from bot.core.config import Config, Secrets
from bot.core.models import utcnow
from bot.core.signing import AuditSigner
from bot.engine.approvals import ApprovalPolicy
from bot.engine.engine import APPROVAL_POLL_SECONDS, Engine
from bot.engine.events import ProgressSink
from bot.store.killpoints import KillPoints
from bot.store.lease import EngineLease
from bot.store.store import Store
from bot.systems.services import Services, build_services
from steps.base import Step
from steps.plan import upgrade_plan
from steps.revert_check import connector_now


def audit_signer(config: Config) -> AuditSigner | None:
    """The checkpoint signer when audit.signing_key_file is configured; raises SigningKeyError saying why not."""
    if config.audit.signing_key_file is None:
        return None
    return AuditSigner.from_file(config.audit.signing_key_file, database_path=config.database.path)


@dataclass
class Runtime:
    config: Config
    lease: EngineLease
    store: Store
    services: Services
    engine: Engine

    @classmethod
    def build(
        cls,
        config: Config,
        secrets: Secrets,
        *,
        policy: ApprovalPolicy,
        sinks: list[ProgressSink] | None = None,
        services: Services | None = None,
        plan: Mapping[str, Step] | None = None,
        environ: Mapping[str, str] | None = None,
        approval_poll_seconds: float = APPROVAL_POLL_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ) -> Runtime:
        """Raises SigningKeyError (the audit key cannot be used), EngineBusy (another engine holds the
        database) or ServicesError; nothing is left held."""
        signer = audit_signer(config)
        lease = EngineLease(config.database.path).acquire()
        try:
            built = services if services is not None else build_services(config, secrets)
        except BaseException:
            lease.release()
            raise
        hooks = KillPoints(dict(os.environ if environ is None else environ))
        store = Store(config.database.path, hooks=hooks if hooks.active else None)
        engine = Engine(
            store,
            config,
            plan if plan is not None else upgrade_plan(),
            policy=policy,
            sinks=sinks,
            services=built,
            approval_poll_seconds=approval_poll_seconds,
            signer=signer,
            changes=built.servicenow,  # the change requests behind tickets ([change.servicenow]), or None
            clock=clock,
            revert_reader=connector_now,  # what a revert to snapshot verifies on the host
        )
        return cls(config, lease, store, built, engine)

    @property
    def titles(self) -> dict[str, str]:
        return {step_id: step.title for step_id, step in self.engine.steps.items()}

    async def stop(self) -> None:
        """After the front end stopped: the engine, the outside systems, then the lease (the store stays
        readable, for a test that looks at what the runs left)."""
        await self.engine.stop()
        await self.services.close()
        self.lease.release()

    async def close(self) -> None:
        await self.stop()
        self.store.close()
