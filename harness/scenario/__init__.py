"""Declarative scenarios: format (TOML), runner, checks (SPEC.md §10)."""

from harness.scenario.format import Scenario, ScenarioError, load

__all__ = ["Scenario", "ScenarioError", "load"]
