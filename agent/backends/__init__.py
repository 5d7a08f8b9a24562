"""LM backends behind the `LM` protocol: hf (embedded default), litellm (APIs), vllm (GPU)."""
