"""The `analytics` command: one entry point with a subcommand per part of the pipeline."""
