"""The engine tests' fixtures: engine_factory lives with the engine tests that first needed it."""

from tests.engine.test_engine import engine_factory

__all__ = ["engine_factory"]
