from ironsight.cli import main

raise SystemExit(main())
