"""Benchmarks that print figures (not tests): ``python -m bench <name> [options]``.

Each module ``bench/<name>.py`` has ``main(argv: list[str]) -> int``.
"""
