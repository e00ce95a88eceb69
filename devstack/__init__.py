"""The embedded stack for local runs, tests and benches (``devstack.stack``), ``mpp sandbox pay``
(``devstack.sandbox_pay``), the demo (``devstack.demo``) and the full ``mpp`` command line
(``devstack.cli``: the production commands of ``workers.cli`` plus ``demo``, ``dev`` and ``sandbox``).

The top floor: it may import ``sandbox``, ``hce_device`` and every floor of the product below;
nothing of the product imports it.
"""
