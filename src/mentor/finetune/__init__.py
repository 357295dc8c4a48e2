"""Fine-tuning: our own LoRA (PEFT-compatible files), full fine-tuning and a trainer that resumes
exactly, with before/after evaluation built in."""
