"""Real components for the test suites: PostgreSQL, gunicorn, free ports."""
