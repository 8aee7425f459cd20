"""The call layer: what happens around every provider call whatever its transport. The call
context, the seam that runs the layers (reply cache, hooks, instrumentation) around each
call method, the guard (closed check, concurrency slot, metrics), the limiter, metrics and
the bounded fan-out. It imports only :mod:`llmkit.core`."""
