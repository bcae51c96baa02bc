from __future__ import annotations

from presence_sip.cli.main import main

raise SystemExit(main())
