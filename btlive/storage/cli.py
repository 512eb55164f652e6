"""Command-line entry: placeholder until its owner fills it in."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("import", help="import a CSV of OHLCV bars into ArcticDB")
    parser.set_defaults(func=lambda args: print("not implemented yet") or 1)
