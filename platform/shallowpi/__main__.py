from shallowpi.cli import main

raise SystemExit(main())
