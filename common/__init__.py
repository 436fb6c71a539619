"""The bottom floor: plumbing every DreamTwin package uses and none owns.

- `common.types`: the vocabulary (`Observation`, action chunks, `StepResult`, the `World`,
  `BatchedWorld` and `Policy` protocols, `Episode`).
- `common.errors`: the error types, each printed as one line by the CLI.
- `common.config`: strict YAML -> pydantic loading with file- and key-naming errors, dotted overrides.
- `common.io`: atomic writes, fsynced JSON lines, stable hashes.
- `common.registry`: name -> factory registries that import on first use.
- `common.pool`: the worker pool (spawned processes or Ray actors, one heavy object each).
- `common.video`: MP4 encode / join / seek-decode through PyAV, and `psnr`.
- `common.machine`: the machine fingerprint written beside every result.
- `common.training`: the one training harness on Lightning (seeded steps, learning-rate schedules,
  safetensors training state, exact resume, JSONL log, time limit).

Imports nothing of ours and nothing heavy (no torch, Genesis, open3d, gsplat or Ray at import).
"""
