"""Tool declaration and the built-in tools (web search, sandboxed code, SQL, retrieval)."""
