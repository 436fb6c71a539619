"""The `dreamtwin` console command: one subcommand group per user job (see `dreamtwin --help`)."""
