"""A Jepsen-style test of what the service promises, on the stack spread over the hosts of a
network lab (tooling/spread.py): a workload of what a venue does (workload.py), recorded
operation by operation (history.py), while a nemesis partitions, pauses and kills
(nemesis.py); then a checker over the record and the final state (checker.py). `python -m
tooling.chaos` runs it and prints the report (docs/chaos.md)."""
