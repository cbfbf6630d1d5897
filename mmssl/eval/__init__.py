"""Evaluation: probes, diagnostics, retrieval and zero-shot, plots."""
