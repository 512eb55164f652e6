"""``btlive config check|init|reference``."""

from __future__ import annotations


def register(subparsers) -> None:
    from btlive.run.examples import EXAMPLES

    p = subparsers.add_parser("check", help="validate a config file; print every problem",
                              description="Validate FILE against the schema; print every problem "
                                          "(file, table, key) and exit 1 if there is one.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=check)
    p = subparsers.add_parser("init", help="print a commented config that runs as is",
                              description="Print a commented btlive.toml that runs as is against "
                                          "the bundled simulators and sample data.")
    p.add_argument("--example", choices=sorted(EXAMPLES), default="sma")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE (refuses to overwrite)")
    p.set_defaults(func=init)
    p = subparsers.add_parser("reference", help="print the configuration reference (markdown)")
    p.set_defaults(func=reference)


def check(args) -> int:
    from btlive.config import check_file

    problems = check_file(args.file) or strategy_problems(args.file)
    for line in problems:
        print(line)
    if not problems:
        print(f"{args.file}: ok")
    return 1 if problems else 0


def strategy_problems(path: str) -> list[str]:
    """The [strategy] class must load and its params must exist with the right types."""
    from btlive.config import load_run_config
    from btlive.errors import UsageError
    from btlive.run.strategy import load_strategy, strategy_params

    cfg, _ = load_run_config(path)
    if cfg.strategy.class_ is None:
        return []
    try:
        strategy_params(load_strategy(cfg.strategy.class_), cfg.strategy.params)
    except UsageError as exc:
        text = str(exc)
        return [f"{path}: {text if text.startswith('[strategy]') else '[strategy] class: ' + text}"]
    return []


def init(args) -> int:
    from pathlib import Path

    from btlive.errors import UsageError
    from btlive.run.examples import EXAMPLES

    text = EXAMPLES[args.example]
    if args.output:
        target = Path(args.output)
        if target.exists():
            raise UsageError(f"--output {args.output}: exists; remove it or choose another name")
        target.write_text(text)
    else:
        print(text, end="")
    return 0


def reference(args) -> int:
    from btlive.config import reference_markdown

    print(reference_markdown(), end="")
    return 0
