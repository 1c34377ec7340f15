"""Evaluate a ValidatingAdmissionPolicy's CEL the way the API server does, with cel-python.

The API server binds `object` (and `oldObject`, `request`, `params`...) and evaluates the
`variables` in order, each able to read the earlier ones as `variables.<name>`; then every
validation's `expression`, and for each one that is false, its `messageExpression` (or
`message`). The policy is written in portable CEL (standard macros, `matches`, `has`,
`size`, `in`), which cel-python implements; it lacks the Kubernetes extension libraries
(`optional`, `split`, `join`, `quantity`, ...), so the policy does not use them.

Two differences stay: cel-python runs regexes with Python's `re`, not RE2 (the patterns
here mean the same in both), and it does no type checking or cost estimation; the
control-plane suite loads the same policy into a real API server for those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes


@dataclass(frozen=True)
class Denial:
    expression: str
    message: str


class PolicyEvaluator:
    def __init__(self, policy: dict[str, Any]) -> None:
        self.env = celpy.Environment()
        spec = policy["spec"]
        self.variables = [(v["name"], self._compile(v["expression"])) for v in spec["variables"]]
        self.validations = [
            (
                v["expression"],
                self._compile(v["expression"]),
                self._compile(v["messageExpression"]) if "messageExpression" in v else None,
                v.get("message", ""),
            )
            for v in spec["validations"]
        ]

    def _compile(self, expression: str) -> celpy.Runner:
        return self.env.program(self.env.compile(expression))

    @staticmethod
    def _run(program: celpy.Runner, activation: dict[str, Any]) -> Any:
        result = program.evaluate(activation)
        # cel-python returns evaluation errors as values instead of raising them.
        if isinstance(result, celpy.CELEvalError):
            raise result
        return result

    def denials(self, obj: dict[str, Any]) -> list[Denial]:
        """The validations `obj` fails, with their messages; [] means admitted."""
        variables = celtypes.MapType({})
        activation: dict[str, Any] = {"object": celpy.json_to_cel(obj), "variables": variables}
        for name, program in self.variables:
            variables[celtypes.StringType(name)] = self._run(program, activation)
        found = []
        for expression, program, message_program, message in self.validations:
            verdict = self._run(program, activation)
            if not isinstance(verdict, celtypes.BoolType):
                raise TypeError(f"{expression!r} gave {verdict!r}, not a bool")
            if not verdict:
                text = str(self._run(message_program, activation)) if message_program else message
                found.append(Denial(expression, text))
        return found
