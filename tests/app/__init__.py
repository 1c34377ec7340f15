"""Tests of the service in app/ (webapp)."""
