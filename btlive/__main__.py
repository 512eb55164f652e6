from btlive.cli import main

raise SystemExit(main())
