"""How a process lets its operators see it: metrics (``metrics``, and Temporal's through
``temporal_metrics``), traces (``tracing``) and logs (``logs``); ``process.start`` sets up the
last two for a process. Metrics need no set-up beyond the monitoring listener that serves them."""
