"""The OpenAI-compatible server: engines (torch with dynamic batching, ONNX Runtime, vLLM), the FastAPI app,
Prometheus metrics, and Ray Serve replicas."""
