"""Helpers shared by the tests: interpreters, processes, HTTP over loopback."""
