"""Input, tool-call, tool-result and output guardrails."""
