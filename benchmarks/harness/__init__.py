"""Building blocks of the SIPp benchmarks (``run.py``, ``bench_transactions.py``,
``profile_serve.py``), one module per concept:

* ``config``: addresses, ports, CPUs, pass/fail thresholds, run sizes (``Settings``);
* ``processes``: starting and reaping subprocesses, CPU and memory of a process tree;
* ``probe``: a tiny blocking SIP client (OPTIONS readiness ping, one PUBLISH);
* ``servers``: the servers under test (Kamailio, ours) and the tools they need;
* ``sipp``: running SIPp and reading its statistics;
* ``samples``: rate rounding, latency samples and percentiles from SIPp's action logs;
* ``report``: the numbers of one target and the Markdown report.
"""
