"""The `jobwheel` command line."""


def main() -> None:
    raise SystemExit("jobwheel: the command line is not available yet")
