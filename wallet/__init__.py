"""The wallet's core: settings, database and migrations, ledger, records, users, sessions and
tokens, credentials, evaluation rules, the Temporal connection and payload codec. It imports
``alipayplus`` and nothing else of ours."""
