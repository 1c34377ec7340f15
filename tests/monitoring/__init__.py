"""Tests of monitoring/ (rules, dashboard, Alertmanager) and of the monitoring role."""
