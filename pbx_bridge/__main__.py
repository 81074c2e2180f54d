from pbx_bridge.cli import main

raise SystemExit(main())
