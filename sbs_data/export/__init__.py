"""Export shards + manifest + dataset card, and push them to the Hugging Face Hub."""
