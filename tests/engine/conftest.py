"""The engine tests' fixtures: engine_factory lives with the engine tests that first needed it; upgrade (the
real steps against a simulated host) with the step tests."""

from tests.engine.test_engine import engine_factory
from tests.steps.conftest import upgrade

__all__ = ["engine_factory", "upgrade"]
