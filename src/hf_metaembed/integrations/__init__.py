"""The tools a Hugging Face user already has: Trainer, PEFT, pipelines, the Hub (model cards) and metrics."""
