from simbridge.cli import main

raise SystemExit(main())
