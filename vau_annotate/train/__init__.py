"""The bundled trainer (SFT / GRPO) and its data collation, rewards and tiny test model."""
