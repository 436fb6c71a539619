"""Research experiments on the world model and its success judge: questions asked once, answered in
experiments/results/<name>.json through `common.results.write_result` (command, commit, date,
machine, then the figures). Run one as `python experiments/<script>.py` or
`python -m experiments.<script>`."""
