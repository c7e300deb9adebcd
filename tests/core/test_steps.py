"""The setup steps are one enum (core/steps.py) that the tables, the workflow and the pages
share; its values are stored in rows, search attributes and histories, so they never change."""

from __future__ import annotations

import ast
from pathlib import Path

import core.models
import core.steps
import workflows.setup
from api.routes import setup as setup_routes
from core.steps import FINAL_SETUP_STATES, OPEN_SETUP_STATES, SetupState

ROOT = Path(__file__).resolve().parents[2]


def test_the_step_values_are_the_ones_already_stored() -> None:
    assert [s.value for s in SetupState] == [
        "not_started",
        "sending_email",
        "email_sent",
        "link_opened",
        "password_set",
        "code_sent",
        "mfa_pending",
        "active",
        "expired",
        "superseded",
        "cancelled",
        "failed",
    ]
    assert OPEN_SETUP_STATES.isdisjoint(FINAL_SETUP_STATES)
    assert set(SetupState) == OPEN_SETUP_STATES | FINAL_SETUP_STATES | {SetupState.not_started}


def test_models_workflow_and_pages_use_the_one_enum() -> None:
    assert core.models.SetupState is SetupState
    assert core.models.OPEN_SETUP_STATES is OPEN_SETUP_STATES
    for steps in (
        workflows.setup.PASSWORD_STEPS,
        workflows.setup.CODE_STEPS,
        set(setup_routes.STEP_PAGES),
    ):
        assert all(type(step) is SetupState for step in steps), steps


def test_the_step_module_is_pure() -> None:
    """Workflows import it through imports_passed_through: the standard library only."""
    tree = ast.parse(Path(core.steps.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "enum"}


def test_the_setup_workflow_names_no_step_by_a_bare_string() -> None:
    source = (ROOT / "workflows" / "setup.py").read_text()
    tree = ast.parse(source)
    values = {s.value for s in SetupState}
    bare = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in values
        and "workflow.signal(name=" not in source.splitlines()[node.lineno - 1]
    ]
    assert bare == []
