"""Command-line entry: placeholder until its owner fills it in."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("verify", help="verify the audit hash chain")
    parser.set_defaults(func=lambda args: print("not implemented yet") or 1)
