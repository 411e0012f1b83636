"""Real servers for tests, started on loopback by the test suite itself (never mocks)."""
