"""Each repository semgrep rule fires on its `# ruleid:` lines and only there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / ".semgrep"
FIXTURES = Path(__file__).parent / "fixtures"
ANNOTATION = re.compile(r"#\s*(ruleid|ok):\s*([\w-]+)")


def rule_ids() -> list[str]:
    ids = []
    for path in sorted(RULES.glob("*.yml")):
        ids += [rule["id"] for rule in yaml.safe_load(path.read_text())["rules"]]
    return ids


def annotations() -> dict[str, set[tuple[str, int]]]:
    """{"ruleid:<rule>" or "ok:<rule>": {(file, line the annotation points at)}}."""
    marks: dict[str, set[tuple[str, int]]] = {}
    for path in sorted(FIXTURES.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = ANNOTATION.search(line)
            if match:
                kind, rule = match.groups()
                marks.setdefault(f"{kind}:{rule}", set()).add((path.name, number + 1))
    return marks


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str, int]]:
    semgrep = shutil.which("semgrep")
    assert semgrep, "semgrep missing: run `make setup`"
    # semgrep skips tests/ directories by default: scan a copy.
    target = tmp_path_factory.mktemp("semgrep") / "fixtures"
    shutil.copytree(FIXTURES, target)
    env = {**os.environ, "SEMGREP_ENABLE_VERSION_CHECK": "0", "SEMGREP_SEND_METRICS": "off"}
    result = subprocess.run(
        [
            semgrep,
            "scan",
            "--config",
            str(RULES),
            "--metrics=off",
            "--json",
            "--quiet",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    report = json.loads(result.stdout)
    assert not report["errors"], report["errors"]
    return {
        (r["check_id"].rsplit(".", 1)[-1], Path(r["path"]).name, r["start"]["line"])
        for r in report["results"]
    }


@pytest.mark.parametrize("rule", rule_ids())
def test_rule_has_both_fixtures(rule: str) -> None:
    marks = annotations()
    assert marks.get(f"ruleid:{rule}"), f"{rule} has no `# ruleid:` fixture line"
    assert marks.get(f"ok:{rule}"), f"{rule} has no `# ok:` fixture line"


@pytest.mark.parametrize("rule", rule_ids())
def test_rule_fires_exactly_on_its_bad_lines(
    rule: str, findings: set[tuple[str, str, int]]
) -> None:
    expected = annotations().get(f"ruleid:{rule}", set())
    found = {(path, line) for rid, path, line in findings if rid == rule}
    assert found - expected == set(), f"{rule} fired where no `# ruleid:` says so"
    assert expected - found == set(), f"{rule} missed lines marked `# ruleid:`"
    assert not found & annotations().get(f"ok:{rule}", set())


def test_every_rule_is_listed_in_the_guide() -> None:
    guide = (ROOT / "docs" / "ci-cd.md").read_text()
    missing = [rule for rule in rule_ids() if f"`{rule}`" not in guide]
    assert not missing, f"docs/ci-cd.md does not list {missing}"
