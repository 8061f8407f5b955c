"""The servers that run inside inference pods: the transformers server and the vLLM launcher."""
