"""The Streamlit console (uses only the public tierflow API).
Layer: ui (top, beside cli, never importing it); may import bench and every layer below.
"""
