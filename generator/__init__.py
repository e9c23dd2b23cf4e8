"""Synthetic traffic for the pipeline: deterministic events, known ground truth, Kafka or HTTP delivery."""
