"""The streaming data format that ``vae data prepare`` writes and ``StreamingDataModule`` reads:
LitData chunks per split plus ``vae_data.json`` (image shape, splits, versions). Torch-free, so
that parsing ``vae data prepare``'s arguments stays fast."""

FORMAT = "vae-lightning-streaming"
FORMAT_VERSION = 1  # bump when the items or vae_data.json change; StreamingDataModule checks it
META = "vae_data.json"
