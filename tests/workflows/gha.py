"""Reading GitHub Actions workflows: jobs, their needs, and `if:` expressions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def load_workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def job_text(job: dict[str, Any]) -> str:
    """Everything a job runs or uses, as one string to search."""
    parts = []
    for step in steps(job):
        parts.append(str(step.get("uses", "")))
        parts.append(str(step.get("run", "")))
    return "\n".join(parts)


def ancestors(jobs: dict[str, Any], name: str) -> set[str]:
    """Every job that `name` waits for, directly or through other jobs."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        needs = jobs[todo.pop()].get("needs", [])
        for parent in [needs] if isinstance(needs, str) else needs:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<name>[A-Za-z_][\w.\-]*))"
)


def evaluate(expression: str, context: dict[str, Any]) -> bool:
    """Evaluate the subset of GitHub's expression syntax the workflows' `if:` use:
    string literals, dotted context names, ==, !=, !, &&, || and parentheses, and the
    status functions success(), failure() and always(), read from `context["status"]`
    (the job's status so far: "success" unless given)."""
    text = expression.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"cannot parse {text[pos:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()

    def lookup(name: str) -> Any:
        if name in ("true", "false"):
            return name == "true"
        value: Any = context
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def parse_or(i: int) -> tuple[Any, int]:
        left, i = parse_and(i)
        while i < len(tokens) and tokens[i][1] == "||":
            right, i = parse_and(i + 1)
            left = left or right
        return left, i

    def parse_and(i: int) -> tuple[Any, int]:
        left, i = parse_cmp(i)
        while i < len(tokens) and tokens[i][1] == "&&":
            right, i = parse_cmp(i + 1)
            left = left and right
        return left, i

    def parse_cmp(i: int) -> tuple[Any, int]:
        left, i = parse_unary(i)
        while i < len(tokens) and tokens[i][1] in ("==", "!="):
            op = tokens[i][1]
            right, i = parse_unary(i + 1)
            equal = str(left).lower() == str(right).lower()
            left = equal if op == "==" else not equal
        return left, i

    def parse_unary(i: int) -> tuple[Any, int]:
        kind, value = tokens[i]
        if value == "!":
            operand, i = parse_unary(i + 1)
            return not operand, i
        if value == "(":
            inner, i = parse_or(i + 1)
            assert tokens[i][1] == ")", "unbalanced parentheses"
            return inner, i + 1
        if kind == "str":
            return value[1:-1].replace("''", "'"), i + 1
        if tokens[i + 1 : i + 3] == [("op", "("), ("op", ")")]:
            status = context.get("status", "success")
            calls = {"success": status == "success", "failure": status == "failure", "always": True}
            assert value in calls, f"unknown function {value}()"
            return calls[value], i + 3
        return lookup(value), i + 1

    result, end = parse_or(0)
    assert end == len(tokens), f"trailing tokens in {expression!r}"
    return bool(result)
