"""Test doubles and helpers shared across test folders (importable as tests.support.*)."""
