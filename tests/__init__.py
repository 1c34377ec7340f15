"""Test suites; a package so that `tests.support` is importable from every suite."""
