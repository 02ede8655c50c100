"""anemone-export: Export to ONNX, GGUF and serving folders; an OpenAI-compatible server; Ray Serve replicas."""

__version__ = "0.1.0"
