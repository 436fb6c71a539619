"""Speed and fidelity benchmarks of the shipped components. Each script prints a table and writes
benchmarks/results/<name>.json through `common.results.write_result` (command, commit, date, machine,
then its figures). Run one as `python benchmarks/<script>.py` or `python -m benchmarks.<script>`."""
