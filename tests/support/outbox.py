"""A SlackProgress (the outbox) over a real database and engine, with a stand-in Web API client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.core.config import load_config
from bot.engine.engine import Engine
from bot.slack.progress import SlackProgress
from bot.store.store import Store
from tests.support.configs import write_config
from tests.support.fake_steps import gated_plan


def outbox(directory: Path, client: Any = None, slack: str = "") -> tuple[Store, Engine, SlackProgress]:
    """`slack`: extra lines for the [slack] section (e.g. messages_per_second = 10)."""
    config = load_config(str(write_config(directory, slack=slack)))
    store = Store(config.database.path)
    engine = Engine(store, config, gated_plan(directory))
    titles = {step_id: step.title for step_id, step in engine.steps.items()}
    return store, engine, SlackProgress(store, client, config, titles)
