"""What a run needs beyond the model and the data: checkpoint IO, atomic file writes, the W&B
guard, one dotted-path importer and every use of a private Lightning/W&B attribute (compat)."""
