from ecgmae.cli import main

raise SystemExit(main())
