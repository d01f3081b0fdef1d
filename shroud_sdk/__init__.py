"""Shroud SDK: attested, end-to-end encrypted LLM inference behind the OpenAI client API."""
