"""Many questions at once: ``tierflow batch FILE.jsonl``.

- ``items``: the input, JSON Lines with ``{"question": ..., "id"?, "graph"?, "thread_id"?}``
  a line. A bad line becomes a ``failed`` result naming its line and the batch goes on; a
  file with no JSON object line at all is a ``UserError`` (exit 2).
- ``local``: in-process, one ``Runner`` opened once, ``concurrency`` questions in flight;
  a thread's lines run one after the other, in input order.
- ``pool``: ``processes > 1``, spawned workers each with its own event loop and Runner,
  the pending lines dealt out by line number; the parent alone writes the output.
- ``remote``: through ``tierflow serve`` (its HTTP API) with ``langgraph-sdk``.
- ``log``: the output, one JSON line per input line, appended and flushed as each one
  ends, put back in input order when the batch ends.
- ``run``: ``run_batch``; lines already in the output (by ``id``, else by line number)
  are skipped, so running it again resumes a batch that was killed.

Layer: runner (a driver); ``tierflow batch`` and ``tierflow bench batch`` use it.
"""
