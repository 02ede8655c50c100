"""The OpenAI-compatible server: engines (torch with continuous batching, ONNX Runtime, vLLM), the FastAPI app,
Prometheus metrics, and Ray Serve replicas."""
