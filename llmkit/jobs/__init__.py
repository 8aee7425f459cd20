"""Batch jobs: the job file format (prompts in, JSONL rows out, resumable)."""
