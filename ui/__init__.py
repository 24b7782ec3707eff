"""The Streamlit console (uses only the public tierflow API)."""
