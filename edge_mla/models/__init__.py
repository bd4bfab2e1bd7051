"""Encoders, the audio front end and the multimodal classifier (torch)."""

from edge_mla.models.classifier import ModelConfig, MultimodalClassifier, build_model, PRESETS

__all__ = ["ModelConfig", "MultimodalClassifier", "build_model", "PRESETS"]
